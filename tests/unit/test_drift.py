"""Drift as a pure comparison: what the next run would set back, named as differences.

The comparison is the plan's own diff (shared/plan.py), so these tests pin down only how its
changes read as differences (desired and actual per parameter, or a missing connector), and
that the drift path's Exchange access cannot send anything but a read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.connectors import desired_connectors
from shared.drift import ConnectorReader, Difference, ReadOnlyViolation, differences
from shared.exchange import Connector
from shared.notice import parse_notice
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NOTICE = parse_notice((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
SETTINGS = Settings()
DESIRED = desired_connectors(NOTICE, SETTINGS)
OWN = (SETTINGS.ea_connector_name, SETTINGS.mg_connector_name)
EA, MG = SETTINGS.ea_connector_name, SETTINGS.mg_connector_name


def listed(**overrides: dict[str, Any]) -> list[Connector]:
    """The tenant's connectors as the last run left them, with an admin's edits per name."""
    rows = []
    for spec in DESIRED:
        row = {**spec.new_parameters(), "IsValidated": True,
               "ValidationRecipients": list(spec.validation_recipients)}
        row.update(overrides.get(spec.service, {}))
        rows.append(row)
    return [Connector.from_row(r) for r in rows]


def test_connectors_as_the_run_left_them_are_no_drift() -> None:
    assert differences(DESIRED, listed(), own_names=OWN) == []


@pytest.mark.parametrize(("edit", "parameter", "desired", "actual"), [
    ({"SmartHosts": ["mgs.cybermail.jp"]}, "SmartHosts", ["mgf.cybermail.jp"], ["mgs.cybermail.jp"]),
    ({"TlsSettings": "EncryptionOnly"}, "TlsSettings", "CertificateValidation", "EncryptionOnly"),
    ({"Enabled": False}, "Enabled", True, False),
    ({"TestMode": True}, "TestMode", False, True),
    ({"RecipientDomains": ["*.example.com"]}, "RecipientDomains", ["*"], ["*.example.com"]),
])
def test_an_edited_parameter_is_named_with_desired_and_actual(edit: dict[str, Any], parameter: str,
                                                              desired: Any, actual: Any) -> None:
    assert differences(DESIRED, listed(mailgates=edit), own_names=OWN) == [
        Difference(MG, "mailgates", parameter, desired, actual)]


def test_a_deleted_connector_is_missing() -> None:
    only_mg = [c for c in listed() if c.name == MG]
    assert differences(DESIRED, only_mg, own_names=OWN) == [Difference(EA, "enterprise_audit", None)]


def test_a_renamed_connector_of_ours_is_a_name_difference() -> None:
    found = differences(DESIRED, listed(enterprise_audit={"Name": "EA relay (renamed)"}), own_names=OWN)
    assert found == [Difference(EA, "enterprise_audit", "Name", EA, "EA relay (renamed)")]


def test_differences_are_json_data() -> None:
    found = differences(DESIRED, listed(mailgates={"SmartHosts": ["mgs.cybermail.jp"]}), own_names=OWN)
    assert json.loads(json.dumps([d.to_dict() for d in found])) == [d.to_dict() for d in found]


class RecordingClient:
    """A stand-in for ExchangeAdminClient that records what it is asked to send."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.sent: list[tuple[str, Any]] = []

    def invoke(self, cmdlet: str, parameters: Any = None) -> list[dict[str, Any]]:
        self.sent.append((cmdlet, parameters))
        return self.rows if parameters is None else []


@pytest.mark.parametrize("cmdlet", ["Set-OutboundConnector", "New-OutboundConnector", "Remove-OutboundConnector",
                                    "Validate-OutboundConnector", "Get-AcceptedDomain"])
def test_the_reader_refuses_every_cmdlet_but_its_read_before_sending(cmdlet: str) -> None:
    client = RecordingClient([])
    with pytest.raises(ReadOnlyViolation, match=cmdlet):
        ConnectorReader(client).read(cmdlet, {"Identity": MG})  # type: ignore[arg-type]
    assert client.sent == []


def test_the_reader_lists_plain_and_test_mode_connectors_in_two_reads() -> None:
    client = RecordingClient([{"Name": MG, "RecipientDomains": ["*"], "SmartHosts": ["mgf.cybermail.jp"]}])
    found = ConnectorReader(client).connectors()  # type: ignore[arg-type]
    assert [c.name for c in found] == [MG]
    assert client.sent == [("Get-OutboundConnector", None),
                           ("Get-OutboundConnector", {"IncludeTestModeConnectors": True})]
