"""The activation notice (schema v1): parse, normalise, validate.

A notice decides where a customer's outbound mail goes, so it is read strictly: unknown keys
are errors (a typo must never silently drop a setting), smart hosts and journal domains come
only from allow-lists, and every bad field is reported at once with a message in English and
Japanese that says how to fix it. Nothing here raises anything but `NoticeError`.

The common fields are read here; which services a notice may name, and how each requested
service's own fields are read, come from its definition in `services.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import services as _services
from .errors import ErrorCode, ProvisioningError
from .fields import REPORTED as _REPORTED
from .fields import FieldError, domain, err, missing, string, wrong_type
from .settings import Settings
from .text import display, forbidden_characters

__all__ = [
    "ACTIONS",
    "ACTIVATE",
    "ALLOWED_KEYS",
    "GUID_PATTERN",
    "ISSUED_AT_RANGE",
    "MAX_NOTICE_BYTES",
    "NOTICE_ID_PATTERN",
    "SERVICES",
    "TERMINATE",
    "ActivationNotice",
    "FieldError",  # defined in fields.py, shared with the service definitions
    "NoticeError",
    "parse_notice",
]

MAX_NOTICE_BYTES = 16 * 1024
# Canonical order: activation's, Enterprise Audit first (shared/services.py).
SERVICES = _services.keys()

ALLOWED_KEYS = (
    "notice_id",
    "tenant_id",
    "services",
    "journal_report_address",
    "mx_host",
    "validation_recipient",
    "tenant_domain",
    "contract_id",
    "customer_name",
    "issued_at",
    "action",
    "journal_ndr_address",
)

# What a notice asks for: a contract that starts, or one that ends (its connectors removed).
ACTIVATE = "activate"
TERMINATE = "terminate"
ACTIONS = (ACTIVATE, TERMINATE)

# Shared with the HTTP API, CLI and worker so every entry point accepts the same identifiers.
# An id is a URL path segment (/api/activations/{notice_id}), so it must come back unchanged:
# "." and ".." are dot-segments a client or server removes (RFC 3986 §5.2.4), and hosts that
# map URLs onto Windows paths drop a trailing dot (azure-functions-host issues #969, #3734;
# the trailing-dot part is inference from Windows' path rules), so the last character is never a dot.
NOTICE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{0,63}[A-Za-z0-9_-]")
GUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAX_TEXT = 256
# issued_at outside this window is a typo (and near year 1 or 9999 an offset overflows the
# calendar); real UTC offsets run from -12:00 to +14:00.
ISSUED_AT_RANGE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
_MAX_OFFSET = timedelta(hours=14)
_MAX_NODES = 10_000  # more values than a 16 KiB notice can hold; bounds a Mapping given directly


class NoticeError(ProvisioningError):
    """The notice cannot be used; `errors` lists every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(ErrorCode.NOTICE_INVALID, "; ".join(e.line() for e in errors))

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out["errors"] = [e.to_dict() for e in self.errors]
        return out


@dataclass(frozen=True)
class ActivationNotice:
    """A valid, normalised notice. Keys for services not requested are dropped."""

    notice_id: str
    tenant_id: str
    services: tuple[str, ...]
    journal_report_address: str | None = None
    mx_host: str | None = None
    validation_recipient: str | None = None
    tenant_domain: str | None = None
    contract_id: str | None = None
    customer_name: str | None = None
    issued_at: str | None = None
    action: str = ACTIVATE
    journal_ndr_address: str | None = None

    @property
    def terminates(self) -> bool:
        return self.action == TERMINATE

    @property
    def journal_domain(self) -> str | None:
        if self.journal_report_address is None:
            return None
        return self.journal_report_address.rsplit("@", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        """The normalised notice as JSON-ready data (None fields left out)."""
        out: dict[str, Any] = {}
        for key in ALLOWED_KEYS:
            value = getattr(self, key)
            if value is None or (key == "action" and value == ACTIVATE):
                # The default action is left out, so a notice hashes as it did before actions existed.
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @property
    def content_hash(self) -> str:
        """Identifies the notice's meaning: the same notice re-sent hashes the same."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def parse_notice(data: str | bytes | Mapping[str, Any], settings: Settings | None = None, *,
                 registry: Sequence[_services.Service] = _services.SERVICES) -> ActivationNotice:
    """Parse and validate a notice from JSON text, bytes, or an already-decoded object.

    Which services a notice may name, and how each one's fields are checked, come from the
    service definitions (`registry`, the product's own by default).
    """
    settings = settings or Settings()
    errors: list[FieldError] = []
    obj = _screen(_decode(data), errors)
    values: dict[str, Any] = {}

    for key in obj:
        if key not in ALLOWED_KEYS:
            errors.append(err(key, "unknown_key",
                               f"'{key}' is not a notice field; allowed: {', '.join(ALLOWED_KEYS)}. Check the spelling.",
                               f"'{key}' は開通通知の項目ではありません（使用可能: {', '.join(ALLOWED_KEYS)}）。綴りを確認してください。"))

    values["notice_id"] = _check_notice_id(obj, errors)
    values["tenant_id"] = _check_tenant_id(obj, errors)
    services = _check_services(obj, errors, registry)
    values["services"] = services
    values["tenant_domain"] = _check_tenant_domain(obj, errors)
    values["action"] = action = _check_action(obj, errors)
    if action == TERMINATE:
        # Ending a contract needs only which services end: the routing keys of an activation
        # are accepted and ignored, so the contract system may send the notice it has.
        services = None
    for service in _services.requested(services or (), order=_services.activation_order(registry)):
        values.update(service.check(obj, errors, settings=settings, tenant_domain=values["tenant_domain"]))
    for key in ("contract_id", "customer_name"):
        values[key] = _check_text(obj, key, errors)
    values["issued_at"] = _check_issued_at(obj, errors)

    if errors:
        raise NoticeError(errors)
    return ActivationNotice(**values)


def _decode(data: object) -> Mapping[Any, Any]:
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, str | bytes):
        raise NoticeError([err("$", "not_object",
                                f"the notice must be JSON text or an object, not {type(data).__name__}.",
                                "開通通知は JSON テキストまたはオブジェクトである必要があります。")])
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise NoticeError([err("$", "malformed_json",
                                    "the notice contains characters that are not valid Unicode (lone surrogates).",
                                    "開通通知に不正な Unicode 文字が含まれています。形式を確認してください。")]) from None
    size = len(data)
    if size > MAX_NOTICE_BYTES:
        raise NoticeError([err("$", "too_large",
                                f"the notice is {size} bytes; at most {MAX_NOTICE_BYTES} are accepted. Send one notice per message.",
                                f"開通通知が {size} バイトあります（上限 {MAX_NOTICE_BYTES} バイト）。1 メッセージに 1 通知を送ってください。")])
    try:
        text = data.decode("utf-8-sig")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise NoticeError([err(exc.key, "duplicate_key",
                                f"'{exc.key}' appears more than once; keep exactly one.",
                                f"'{exc.key}' が複数回あります。1 つだけにしてください。")]) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NoticeError([err("$", "malformed_json",
                                f"the notice is not valid UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:120]}).",
                                "開通通知が正しい UTF-8 の JSON ではありません。形式を確認してください。")]) from None
    if not isinstance(obj, dict):
        raise NoticeError([err("$", "not_object",
                                f"the notice must be a JSON object, not {type(obj).__name__}.",
                                "開通通知は JSON オブジェクト（{...}）である必要があります。")])
    return obj


_EDGE_WHITESPACE = " \t\r\n"


def _screen(obj: Mapping[Any, Any], errors: list[FieldError]) -> dict[str, Any]:
    """`obj` with every key and value that holds a forbidden character reported and set aside.

    Control characters, lone surrogates and noncharacters are refused anywhere in a notice,
    in keys, in nested values and in fields of services not requested, because whatever is
    kept of the notice must be storable and showable as text (see shared/text.py). A key
    that is not a string is named by its type: a huge int cannot even be turned into text.
    """
    screened: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            errors.append(err(f"<{type(key).__name__} key>", "unknown_key",
                               f"a {type(key).__name__} is not a notice field name; use the field names as JSON strings.",
                               "項目名は JSON の文字列で指定してください。"))
            continue
        if forbidden_characters(key):
            errors.append(_bad_characters(display(key, 64), key))
            continue
        found = _forbidden_in(value)
        if found is None:
            screened[key] = value
        elif isinstance(found, int):
            errors.append(err(key, "too_large", f"'{key}' holds more than {_MAX_NODES} values; send the notice's own fields only.",
                               f"'{key}' の値が多すぎます（上限 {_MAX_NODES}）。開通通知の項目だけを送ってください。"))
            screened[key] = _REPORTED
        else:
            errors.append(_bad_characters(key, found))
            screened[key] = _REPORTED
    return screened


def _forbidden_in(value: object) -> str | int | None:
    """A string in `value` (nested anywhere) with a forbidden character; the node count if too big."""
    stack = [value]
    seen = 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > _MAX_NODES:
            return seen
        if isinstance(item, str):
            # Tabs and line breaks around a value are copy-and-paste residue that parsing strips.
            if forbidden_characters(item.strip(_EDGE_WHITESPACE)):
                return item
        elif isinstance(item, Mapping):
            for k, v in item.items():
                stack.append(k)
                stack.append(v)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def _bad_characters(field: str, text: str) -> FieldError:
    chars = forbidden_characters(text.strip(_EDGE_WHITESPACE)) or forbidden_characters(text)
    shown = ", ".join(display(c) for c in chars[:5])
    if all("\ud800" <= c <= "\udfff" for c in chars):
        return err(field, "invalid_unicode",
                    f"'{field}' contains an invalid Unicode escape (a lone surrogate: {shown}); remove it.",
                    f"'{field}' に不正な Unicode 文字（サロゲート: {shown}）が含まれています。削除してください。")
    if all(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in chars):
        return err(field, "control_character", f"'{field}' contains control characters ({shown}); remove them.",
                    f"'{field}' に制御文字（{shown}）が含まれています。削除してください。")
    return err(field, "invalid_unicode",
                f"'{field}' contains characters that are not text (control characters, lone surrogates or "
                f"noncharacters: {shown}); remove them.",
                f"'{field}' に文字として使えない文字（{shown}）が含まれています。削除してください。")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a notice")


def _check_notice_id(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = string(obj, "notice_id", errors, required=True)
    if value is not None and not NOTICE_ID_PATTERN.fullmatch(value):
        errors.append(err("notice_id", "invalid_format",
                           "'notice_id' must be 1-64 characters of A-Z a-z 0-9 . _ - and must not end with '.' "
                           "(it is part of the status URL, where '.' and '..' mean something else).",
                           "'notice_id' は A-Z a-z 0-9 . _ - の 1～64 文字で、末尾を '.' 以外にしてください"
                           "（状態確認 URL の一部になるため）。"))
        return None
    return value


def _check_tenant_id(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = string(obj, "tenant_id", errors, required=True)
    if value is None:
        return None
    lowered = value.lower()
    if not GUID_PATTERN.fullmatch(lowered):
        errors.append(err("tenant_id", "invalid_guid",
                           "'tenant_id' must be the tenant's GUID, like 00000000-0000-0000-0000-000000000000 "
                           "(Entra admin center > Overview > Tenant ID).",
                           "'tenant_id' はテナントの GUID（例: 00000000-0000-0000-0000-000000000000）で指定してください"
                           "（Entra 管理センター > 概要 > テナント ID）。"))
        return None
    return lowered


def _check_action(obj: Mapping[str, Any], errors: list[FieldError]) -> str:
    value = string(obj, "action", errors, required=False)
    if value is None or value in ACTIONS:
        return value or ACTIVATE
    errors.append(err("action", "unknown_action",
                       f"'{value[:40]}' is not an action; use \"activate\" (the default) or \"terminate\".",
                       f"'{value[:40]}' は action の値ではありません。\"activate\"（既定）または \"terminate\" を指定してください。"))
    return ACTIVATE


def _check_services(obj: Mapping[str, Any], errors: list[FieldError],
                    registry: Sequence[_services.Service]) -> tuple[str, ...] | None:
    known = _services.keys(registry)
    # Named to people in the registry's order (MailGates first), as the contract system lists them.
    named = [f'"{s.key}"' for s in registry]
    listed_en, listed_ja = " and/or ".join(named), " または ".join(named)
    example = "[" + ", ".join(named) + "]"
    if "services" not in obj or obj["services"] is None:
        errors.append(missing("services"))
        return None
    value = obj["services"]
    if value is _REPORTED:
        return None
    if not isinstance(value, list):
        errors.append(wrong_type("services", f"a list such as {example}", f"{example} のようなリスト"))
        return None
    if not value:
        errors.append(err("services", "empty", f"list at least one service: {listed_en}.",
                          f"{listed_ja} を 1 つ以上指定してください。"))
        return None
    seen: list[str] = []
    ok = True
    for item in value:
        if not isinstance(item, str) or item not in known:
            # Never render arbitrary values: a 5000-digit int cannot even be turned into text.
            shown = display(item, 40) if isinstance(item, str) else f"a {type(item).__name__}"
            errors.append(err("services", "unknown_service",
                              f"'{shown}' is not a service; use {listed_en}.",
                              f"'{shown}' はサービス名ではありません。{listed_ja} を指定してください。"))
            ok = False
        elif item in seen:
            errors.append(err("services", "duplicate_service", f"'{item}' is listed twice; list each service once.",
                              f"'{item}' が 2 回指定されています。各サービスは 1 回だけ指定してください。"))
            ok = False
        else:
            seen.append(item)
    if not ok:
        return None
    return tuple(s for s in known if s in seen)


def _check_tenant_domain(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = string(obj, "tenant_domain", errors, required=False)
    if value is None:
        return None
    name = domain(value.rstrip("."))
    if name is None or not name.endswith(".onmicrosoft.com") or name.count(".") != 2:
        errors.append(err("tenant_domain", "invalid_tenant_domain",
                           "'tenant_domain' must be the tenant's initial domain, like contoso.onmicrosoft.com.",
                           "'tenant_domain' は contoso.onmicrosoft.com のようなテナントの初期ドメインで指定してください。"))
        return None
    return name


def _check_text(obj: Mapping[str, Any], field: str, errors: list[FieldError]) -> str | None:
    value = string(obj, field, errors, required=False)
    if value is not None and len(value) > _MAX_TEXT:
        errors.append(err(field, "too_long", f"'{field}' is longer than {_MAX_TEXT} characters; shorten it.",
                           f"'{field}' が {_MAX_TEXT} 文字を超えています。短くしてください。"))
        return None
    return value


def _check_issued_at(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = string(obj, "issued_at", errors, required=False)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    offset = parsed.utcoffset() if parsed is not None else None
    if parsed is None or offset is None or "T" not in value.upper():
        errors.append(err("issued_at", "invalid_timestamp",
                           "'issued_at' must be an ISO 8601 timestamp with an offset, like 2026-04-01T09:00:00+09:00.",
                           "'issued_at' は 2026-04-01T09:00:00+09:00 のようなオフセット付き ISO 8601 形式で指定してください。"))
        return None
    low, high = ISSUED_AT_RANGE
    try:
        instant = parsed.astimezone(UTC) if abs(offset) <= _MAX_OFFSET else None
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is after the last instant a datetime holds
        instant = None
    if instant is None or not low <= instant < high:
        errors.append(err("issued_at", "out_of_range",
                           f"'issued_at' must be between {low.year} and {high.year - 1} with an offset between -14:00 "
                           "and +14:00, like 2026-04-01T09:00:00+09:00; check the date on the activation notice.",
                           f"'issued_at' は {low.year}～{high.year - 1} 年、オフセット -14:00～+14:00 の範囲で指定してください"
                           "（例: 2026-04-01T09:00:00+09:00）。開通通知書の日付を確認してください。"))
        return None
    # One instant, one text: the same notice re-sent with another offset must hash the same.
    return instant.isoformat().replace("+00:00", "Z")
