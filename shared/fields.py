"""Reading one field of an activation notice: the checks and messages every field shares.

`notice.py` reads the notice as a whole (keys, characters, the common fields) and each service
definition in `services.py` reads its own fields; both report through these helpers, so a bad
field reads the same whoever checks it: one `FieldError` with a stable code and a message in
English and Japanese that says how to fix it. Pure: values in, values and errors out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")

# Stands for a value that already has its field error, so no later check reports it again.
REPORTED = object()


@dataclass(frozen=True)
class FieldError:
    """One bad field: which, a stable code, and how to fix it (EN and JA)."""

    field: str
    code: str
    message: str
    message_ja: str

    def to_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "code": self.code,
            "message": self.message,
            "message_ja": self.message_ja,
        }

    def line(self) -> str:
        return f"{self.field}: {self.code}: {self.message} / {self.message_ja}"


def err(field: str, code: str, message: str, message_ja: str) -> FieldError:
    return FieldError(field, code, message, message_ja)


def missing(field: str, why_en: str = "", why_ja: str = "") -> FieldError:
    return err(field, "missing", f"'{field}' is required{why_en}. Add it to the notice.",
               f"'{field}' は必須です{why_ja}。開通通知に追加してください。")


def wrong_type(field: str, expected_en: str, expected_ja: str) -> FieldError:
    return err(field, "wrong_type", f"'{field}' must be {expected_en}.",
               f"'{field}' は{expected_ja}である必要があります。")


def string(obj: Mapping[str, Any], field: str, errors: list[FieldError], *, required: bool,
           why_en: str = "", why_ja: str = "") -> str | None:
    """The field's text, trimmed; None (with its error when `required`) when absent or empty."""
    if field not in obj or obj[field] is None:
        if required:
            errors.append(missing(field, why_en, why_ja))
        return None
    value = obj[field]
    if value is REPORTED:
        return None
    if not isinstance(value, str):
        errors.append(wrong_type(field, "a string", "文字列"))
        return None
    value = value.strip()
    if not value:
        if required:
            errors.append(err(field, "empty", f"'{field}' is empty{why_en}. Fill it in.",
                              f"'{field}' が空です{why_ja}。値を入力してください。"))
        return None
    return value


def domain(value: str) -> str | None:
    """A lower-case DNS name with at least two labels, or None."""
    name = value.lower()
    if len(name) > 253 or "." not in name:
        return None
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return None
    return name


def email(value: str) -> str | None:
    """The address with its domain lower-cased, or None when it is not a plain address."""
    if len(value) > 254 or value.count("@") != 1:
        return None
    local, host = value.split("@")
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        return None
    name = domain(host)
    return None if name is None else f"{local}@{name}"


def is_tenant_domain(name: str, tenant_domain: str | None) -> bool:
    return name == "onmicrosoft.com" or name.endswith(".onmicrosoft.com") or name == tenant_domain


def in_domains(name: str, domains: Iterable[str]) -> bool:
    """Whether `name` is one of `domains` or a subdomain of one."""
    return any(name == d or name.endswith("." + d) for d in domains)


@dataclass(frozen=True)
class Messages:
    """A field's own words for one problem (EN, JA)."""

    en: str
    ja: str


def external_address(obj: Mapping[str, Any], field: str, errors: list[FieldError], *, required: bool,
                     example: str, tenant_domain: str | None, journal_domains: Iterable[str],
                     in_tenant: Messages, in_journal_domain: Messages,
                     why_en: str = "", why_ja: str = "") -> str | None:
    """A mail address outside the tenant and outside every journal domain, or None with its error.

    Outside the tenant: an address in `*.onmicrosoft.com` or the tenant's own domain would be
    delivered inside Exchange Online, not to the outside world the field is for. Outside the
    journal domains: mail there rides the more specific Enterprise Audit connector (and those
    domains only take journal reports). Each field says in its own words why that matters.
    """
    value = string(obj, field, errors, required=required, why_en=why_en, why_ja=why_ja)
    if value is None:
        return None
    address = email(value)
    if address is None:
        errors.append(err(field, "invalid_email", f"'{field}' must be an address like {example}.",
                          f"'{field}' は {example} のような形式で指定してください。"))
        return None
    host = address.rsplit("@", 1)[1]
    if is_tenant_domain(host, tenant_domain):
        errors.append(err(field, "recipient_in_tenant", in_tenant.en, in_tenant.ja))
        return None
    if in_domains(host, journal_domains):
        errors.append(err(field, "recipient_in_journal_domain", in_journal_domain.en, in_journal_domain.ja))
        return None
    return address
