"""The README's reference tables are checked against the code, so they cannot drift."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from shared.errors import ErrorCode
from shared.settings import SETTINGS, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
SECRETS = {"exo_client_secret", "storage_connection_string"}


def _default(attr: str) -> str:
    value = {f.name: f.default for f in fields(Settings)}[attr]
    if attr in SECRETS or value == "":
        return ""
    if isinstance(value, frozenset):
        return "`" + ",".join(sorted(value)) + "`"
    return f"`{value}`"


def test_the_settings_table_lists_every_setting_with_its_default_and_meaning() -> None:
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([A-Za-z_]+)` \|.*$", README, re.M)}
    for spec in SETTINGS:
        assert spec.env in rows, f"README lacks {spec.env}"
        expected = f"| `{spec.env}` | {_default(spec.attr)} | {spec.description} |"
        assert rows[spec.env] == expected.replace(" |  |", " | |")


def test_every_error_code_is_explained() -> None:
    for code in ErrorCode:
        assert f"`{code.value}`" in README, f"README lacks {code.value}"


def test_the_two_commands_are_the_ones_the_makefile_has() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    assert "make run" in README and "make test" in README
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
