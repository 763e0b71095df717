"""`python -m shared plan`: golden outputs for every sample and format, and the exit codes.

Golden files live in tests/golden; after an intended change of output, regenerate them with
`UPDATE_GOLDEN=1 make test` and review the diff like code.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from shared.cli import EXIT_INVALID, EXIT_OK, main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "samples").glob("*.json"))
GOLDEN = ROOT / "tests" / "golden"
AT = "2026-11-30T00:00:00Z"
EXTENSIONS = {"json": "json", "text": "txt", "powershell": "ps1"}


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err, local_env=None)
    return code, out.getvalue(), err.getvalue()


def test_every_combination_of_services_has_a_sample() -> None:
    services = {tuple(sorted(json.loads(p.read_text(encoding="utf-8"))["services"])) for p in SAMPLES}
    assert services == {("enterprise_audit", "mailgates"), ("mailgates",), ("enterprise_audit",)}
    assert len(SAMPLES) == 4


@pytest.mark.parametrize("fmt", sorted(EXTENSIONS))
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_plan_output_matches_the_reviewed_golden_file(sample: Path, fmt: str) -> None:
    code, out, err = run("plan", str(sample), "--format", fmt, "--at", AT)
    assert (code, err) == (EXIT_OK, "")
    golden = GOLDEN / f"{sample.stem}.{EXTENSIONS[fmt]}"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


DESIGN_TABLE = {
    "both-cs365-mgf": [
        ("Enterprise Audit送信コネクタ", ["*.cs-365.cybermail.jp"], [], True, ["jr-0001@cs-365.cybermail.jp"]),
        ("MAILGATESΣ 送信コネクタ", ["*"], ["mgf.cybermail.jp"], False, ["adm@example.com"]),
    ],
    "both-cs36502-mgs": [
        ("Enterprise Audit送信コネクタ", ["*.cs-365-02.cybermail.jp"], [], True, ["jr-0002@cs-365-02.cybermail.jp"]),
        ("MAILGATESΣ 送信コネクタ", ["*"], ["mgs.cybermail.jp"], False, ["postmaster@fabrikam.example"]),
    ],
    "mailgates-only": [
        ("MAILGATESΣ 送信コネクタ", ["*"], ["mgp.cybermail.jp"], False, ["it-admin@northwind.example"]),
    ],
    "enterprise-audit-only": [
        ("Enterprise Audit送信コネクタ", ["*.cs-365.cybermail.jp"], [], True, ["jr-0004@cs-365.cybermail.jp"]),
    ],
}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_json_plan_has_the_exact_values_of_the_design_table(sample: Path) -> None:
    code, out, _ = run("plan", str(sample), "--format", "json", "--at", AT)
    assert code == EXIT_OK
    doc = json.loads(out)
    assert set(doc) == {"notice_id", "tenant_id", "connectors", "operations"}
    raw = json.loads(sample.read_text(encoding="utf-8"))
    assert doc["notice_id"] == raw["notice_id"]
    assert doc["tenant_id"] == raw["tenant_id"].lower()
    got = [(c["Name"], c["RecipientDomains"], c["SmartHosts"], c["UseMXRecord"], c["ValidationRecipients"])
           for c in doc["connectors"]]
    assert got == DESIGN_TABLE[sample.stem]
    for connector in doc["connectors"]:
        assert connector["ConnectorType"] == "Partner"
        assert connector["TlsSettings"] == "CertificateValidation"
        assert connector["Enabled"] is True
        assert connector["IsTransportRuleScoped"] is False
    cmdlets = [op["CmdletName"] for op in doc["operations"]]
    assert cmdlets == ["New-OutboundConnector", "Validate-OutboundConnector", "Set-OutboundConnector"] * len(got)
    for op in doc["operations"]:
        if op["CmdletName"] == "New-OutboundConnector":
            assert "ValidationRecipients" not in op["Parameters"]
        if op["CmdletName"] == "Set-OutboundConnector":
            assert op["Parameters"]["IsValidated"] is True
            assert op["Parameters"]["LastValidationTimestamp"] == AT


def test_plan_reads_the_notice_from_standard_input() -> None:
    text = (ROOT / "samples" / "mailgates-only.json").read_text(encoding="utf-8")
    code, out, _ = run("plan", "-", "--format", "json", "--at", AT)
    assert code == EXIT_INVALID  # empty stdin is not a notice
    code, out, _ = run("plan", "-", "--format", "json", "--at", AT, stdin=text)
    assert code == EXIT_OK
    assert json.loads(out)["notice_id"] == "ACT-2026-0003"


@pytest.mark.parametrize(
    ("notice", "field", "code"),
    [
        ({"mx_host": "mx.attacker.example"}, "mx_host", "host_not_allowed"),
        ({"journal_report_address": "a@cs-365.evil.jp"}, "journal_report_address", "domain_not_allowed"),
        ({"tenant_id": "not-a-guid"}, "tenant_id", "invalid_guid"),
        ({"services": []}, "services", "empty"),
        ({"services": ["mailgates", "archive"]}, "services", "unknown_service"),
        ({"mx_hosts": "mgf.cybermail.jp"}, "mx_hosts", "unknown_key"),
        ({"validation_recipient": None}, "validation_recipient", "missing"),
    ],
)
def test_invalid_notice_exits_2_naming_the_field_on_stderr_and_in_json(notice: dict[str, object], field: str,
                                                                        code: str) -> None:
    base = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
    base.update(notice)
    exit_code, out, err = run("plan", "-", "--format", "json", stdin=json.dumps(base))
    assert exit_code == EXIT_INVALID
    assert err.startswith(f"{field}: {code}: ")
    errors = json.loads(out)["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [(field, code)]
    assert errors[0]["message"] and errors[0]["message_ja"]


def test_text_and_powershell_errors_go_to_stderr_only() -> None:
    code, out, err = run("plan", "-", "--format", "text", stdin="[1, 2]")
    assert (code, out) == (EXIT_INVALID, "")
    assert err.startswith("$: not_object: ")


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    code, _out, err = run("plan", str(tmp_path / "nope.json"))
    assert code == EXIT_INVALID
    assert "cannot read" in err


TERMINATIONS = sorted((ROOT / "tests" / "fixtures" / "notices").glob("terminate-*.json"))


@pytest.mark.parametrize("fmt", sorted(EXTENSIONS))
@pytest.mark.parametrize("notice", TERMINATIONS, ids=lambda p: p.stem)
def test_plan_of_a_terminate_notice_matches_the_reviewed_golden_file(notice: Path, fmt: str) -> None:
    code, out, err = run("plan", str(notice), "--format", fmt, "--at", AT)
    assert (code, err) == (EXIT_OK, "")
    golden = GOLDEN / f"{notice.stem}.{EXTENSIONS[fmt]}"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


def test_plan_json_of_a_terminate_notice_lists_the_removals_mailgates_first() -> None:
    code, out, _ = run("plan", str(ROOT / "tests" / "fixtures" / "notices" / "terminate-both.json"),
                       "--format", "json")
    doc = json.loads(out)
    assert code == EXIT_OK and doc["action"] == "terminate"
    assert [(op["CmdletName"], op["Parameters"]["Identity"]) for op in doc["operations"]] == [
        ("Remove-OutboundConnector", "MAILGATESΣ 送信コネクタ"),
        ("Remove-OutboundConnector", "Enterprise Audit送信コネクタ")]


def test_with_journal_rules_ensured_the_plan_removes_the_rule_before_the_enterprise_audit_connector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EA_JOURNAL_RULE", "ensure")
    notice = str(ROOT / "tests" / "fixtures" / "notices" / "terminate-both.json")
    _, out, _ = run("plan", notice, "--format", "json")
    assert [(op["CmdletName"], op["Parameters"]["Identity"]) for op in json.loads(out)["operations"]] == [
        ("Remove-OutboundConnector", "MAILGATESΣ 送信コネクタ"),
        ("Remove-JournalRule", "Enterprise Audit ジャーナル ルール"),
        ("Remove-OutboundConnector", "Enterprise Audit送信コネクタ")]
    _, script, _ = run("plan", notice, "--format", "powershell")
    lines = script.splitlines()
    rule_removal = lines.index("    Remove-JournalRule -Identity $rule.Identity -Confirm:$false")
    assert lines.index("Remove-Ours 'mailgates'") < rule_removal < lines.index("Remove-Ours 'enterprise_audit'")
    # Every rule of our name is checked before anything is removed.
    assert lines.index("        throw \"Journal rule '$($rule.Name)' sends elsewhere; nothing was removed.\"") < \
        lines.index("Remove-Ours 'mailgates'")


def test_with_journal_rules_ensured_an_activation_plan_creates_the_rule_after_the_connectors(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EA_JOURNAL_RULE", "ensure")
    notice = tmp_path / "ea.json"
    notice.write_text(json.dumps({"notice_id": "ACT-J", "tenant_id": "0b4d6e2c-93a1-4f7e-b5c8-1d2e3f405162",
                                  "services": ["enterprise_audit"], "journal_report_address": "jr@cs-365.cybermail.jp",
                                  "journal_ndr_address": "ndr@northwind.example"}), encoding="utf-8")
    _, out, _ = run("plan", str(notice), "--format", "json")
    assert [op["CmdletName"] for op in json.loads(out)["operations"]] == [
        "New-OutboundConnector", "Validate-OutboundConnector", "Set-OutboundConnector",
        "Set-TransportConfig", "New-JournalRule"]
    _, script, _ = run("plan", str(notice), "--format", "powershell")
    lines = script.splitlines()
    # The NDR address is dealt with before any connector is written; the rule after them.
    ndr = lines.index("    Set-TransportConfig -JournalingReportNdrTo 'ndr@northwind.example'")
    first_connector = next(i for i, line in enumerate(lines) if line.startswith("Set-ProvisionedConnector -Name"))
    rule = lines.index("    New-JournalRule -Name $RuleName -JournalEmailAddress $JournalAddress -Scope Global `")
    assert ndr < first_connector < rule
    assert "    if (-not $rule[0].Enabled) { Enable-JournalRule -Identity $RuleName }" in lines


def test_without_an_ndr_address_the_script_stops_before_writing_when_the_tenant_has_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EA_JOURNAL_RULE", "ensure")
    _, script, _ = run("plan", str(ROOT / "samples" / "enterprise-audit-only.json"), "--format", "powershell")
    lines = script.splitlines()
    stop = lines.index("    throw (\"The tenant has no address for undeliverable journal reports; set one with \" +")
    assert stop < next(i for i, line in enumerate(lines) if line.startswith("Set-ProvisionedConnector -Name"))
