"""The activation notice (schema v1): parse, normalise, validate.

A notice decides where a customer's outbound mail goes, so it is read strictly: unknown keys
are errors (a typo must never silently drop a setting), smart hosts and journal domains come
only from allow-lists, and every bad field is reported at once with a message in English and
Japanese that says how to fix it. Nothing here raises anything but `NoticeError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ErrorCode, ProvisioningError
from .settings import Settings
from .text import display, forbidden_characters

MAX_NOTICE_BYTES = 16 * 1024
SERVICES = ("enterprise_audit", "mailgates")  # canonical order: Enterprise Audit first

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
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_TEXT = 256
# issued_at outside this window is a typo (and near year 1 or 9999 an offset overflows the
# calendar); real UTC offsets run from -12:00 to +14:00.
ISSUED_AT_RANGE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
_MAX_OFFSET = timedelta(hours=14)
_MAX_NODES = 10_000  # more values than a 16 KiB notice can hold; bounds a Mapping given directly


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


def parse_notice(data: str | bytes | Mapping[str, Any], settings: Settings | None = None) -> ActivationNotice:
    """Parse and validate a notice from JSON text, bytes, or an already-decoded object."""
    settings = settings or Settings()
    errors: list[FieldError] = []
    obj = _screen(_decode(data), errors)
    values: dict[str, Any] = {}

    for key in obj:
        if key not in ALLOWED_KEYS:
            errors.append(_err(key, "unknown_key",
                               f"'{key}' is not a notice field; allowed: {', '.join(ALLOWED_KEYS)}. Check the spelling.",
                               f"'{key}' は開通通知の項目ではありません（使用可能: {', '.join(ALLOWED_KEYS)}）。綴りを確認してください。"))

    values["notice_id"] = _check_notice_id(obj, errors)
    values["tenant_id"] = _check_tenant_id(obj, errors)
    services = _check_services(obj, errors)
    values["services"] = services
    values["tenant_domain"] = _check_tenant_domain(obj, errors)
    values["action"] = action = _check_action(obj, errors)
    if action == TERMINATE:
        # Ending a contract needs only which services end: the routing keys of an activation
        # are accepted and ignored, so the contract system may send the notice it has.
        services = None
    if services is not None and "enterprise_audit" in services:
        values["journal_report_address"] = _check_journal(obj, errors, settings)
        values["journal_ndr_address"] = _check_ndr_address(obj, errors, values["tenant_domain"], settings)
    if services is not None and "mailgates" in services:
        values["mx_host"] = _check_mx_host(obj, errors, settings)
        values["validation_recipient"] = _check_recipient(obj, errors, values["tenant_domain"], settings)
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
        raise NoticeError([_err("$", "not_object",
                                f"the notice must be JSON text or an object, not {type(data).__name__}.",
                                "開通通知は JSON テキストまたはオブジェクトである必要があります。")])
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise NoticeError([_err("$", "malformed_json",
                                    "the notice contains characters that are not valid Unicode (lone surrogates).",
                                    "開通通知に不正な Unicode 文字が含まれています。形式を確認してください。")]) from None
    size = len(data)
    if size > MAX_NOTICE_BYTES:
        raise NoticeError([_err("$", "too_large",
                                f"the notice is {size} bytes; at most {MAX_NOTICE_BYTES} are accepted. Send one notice per message.",
                                f"開通通知が {size} バイトあります（上限 {MAX_NOTICE_BYTES} バイト）。1 メッセージに 1 通知を送ってください。")])
    try:
        text = data.decode("utf-8-sig")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise NoticeError([_err(exc.key, "duplicate_key",
                                f"'{exc.key}' appears more than once; keep exactly one.",
                                f"'{exc.key}' が複数回あります。1 つだけにしてください。")]) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NoticeError([_err("$", "malformed_json",
                                f"the notice is not valid UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:120]}).",
                                "開通通知が正しい UTF-8 の JSON ではありません。形式を確認してください。")]) from None
    if not isinstance(obj, dict):
        raise NoticeError([_err("$", "not_object",
                                f"the notice must be a JSON object, not {type(obj).__name__}.",
                                "開通通知は JSON オブジェクト（{...}）である必要があります。")])
    return obj


_EDGE_WHITESPACE = " \t\r\n"
# Stands for a value that already has its field error, so no later check reports it again.
_REPORTED = object()


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
            errors.append(_err(f"<{type(key).__name__} key>", "unknown_key",
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
            errors.append(_err(key, "too_large", f"'{key}' holds more than {_MAX_NODES} values; send the notice's own fields only.",
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
        return _err(field, "invalid_unicode",
                    f"'{field}' contains an invalid Unicode escape (a lone surrogate: {shown}); remove it.",
                    f"'{field}' に不正な Unicode 文字（サロゲート: {shown}）が含まれています。削除してください。")
    if all(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in chars):
        return _err(field, "control_character", f"'{field}' contains control characters ({shown}); remove them.",
                    f"'{field}' に制御文字（{shown}）が含まれています。削除してください。")
    return _err(field, "invalid_unicode",
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


def _err(field: str, code: str, message: str, message_ja: str) -> FieldError:
    return FieldError(field, code, message, message_ja)


def _missing(field: str, why_en: str = "", why_ja: str = "") -> FieldError:
    return _err(field, "missing", f"'{field}' is required{why_en}. Add it to the notice.",
                f"'{field}' は必須です{why_ja}。開通通知に追加してください。")


def _wrong_type(field: str, expected_en: str, expected_ja: str) -> FieldError:
    return _err(field, "wrong_type", f"'{field}' must be {expected_en}.", f"'{field}' は{expected_ja}である必要があります。")


def _string(obj: Mapping[str, Any], field: str, errors: list[FieldError], *, required: bool,
            why_en: str = "", why_ja: str = "") -> str | None:
    if field not in obj or obj[field] is None:
        if required:
            errors.append(_missing(field, why_en, why_ja))
        return None
    value = obj[field]
    if value is _REPORTED:
        return None
    if not isinstance(value, str):
        errors.append(_wrong_type(field, "a string", "文字列"))
        return None
    value = value.strip()
    if not value:
        if required:
            errors.append(_err(field, "empty", f"'{field}' is empty{why_en}. Fill it in.",
                               f"'{field}' が空です{why_ja}。値を入力してください。"))
        return None
    return value


def _check_notice_id(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = _string(obj, "notice_id", errors, required=True)
    if value is not None and not NOTICE_ID_PATTERN.fullmatch(value):
        errors.append(_err("notice_id", "invalid_format",
                           "'notice_id' must be 1-64 characters of A-Z a-z 0-9 . _ - and must not end with '.' "
                           "(it is part of the status URL, where '.' and '..' mean something else).",
                           "'notice_id' は A-Z a-z 0-9 . _ - の 1～64 文字で、末尾を '.' 以外にしてください"
                           "（状態確認 URL の一部になるため）。"))
        return None
    return value


def _check_tenant_id(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = _string(obj, "tenant_id", errors, required=True)
    if value is None:
        return None
    lowered = value.lower()
    if not GUID_PATTERN.fullmatch(lowered):
        errors.append(_err("tenant_id", "invalid_guid",
                           "'tenant_id' must be the tenant's GUID, like 00000000-0000-0000-0000-000000000000 "
                           "(Entra admin center > Overview > Tenant ID).",
                           "'tenant_id' はテナントの GUID（例: 00000000-0000-0000-0000-000000000000）で指定してください"
                           "（Entra 管理センター > 概要 > テナント ID）。"))
        return None
    return lowered


def _check_action(obj: Mapping[str, Any], errors: list[FieldError]) -> str:
    value = _string(obj, "action", errors, required=False)
    if value is None or value in ACTIONS:
        return value or ACTIVATE
    errors.append(_err("action", "unknown_action",
                       f"'{value[:40]}' is not an action; use \"activate\" (the default) or \"terminate\".",
                       f"'{value[:40]}' は action の値ではありません。\"activate\"（既定）または \"terminate\" を指定してください。"))
    return ACTIVATE


def _check_services(obj: Mapping[str, Any], errors: list[FieldError]) -> tuple[str, ...] | None:
    if "services" not in obj or obj["services"] is None:
        errors.append(_missing("services"))
        return None
    value = obj["services"]
    if value is _REPORTED:
        return None
    if not isinstance(value, list):
        errors.append(_wrong_type("services", 'a list such as ["mailgates", "enterprise_audit"]',
                                  '["mailgates", "enterprise_audit"] のようなリスト'))
        return None
    if not value:
        errors.append(_err("services", "empty", 'list at least one service: "mailgates" and/or "enterprise_audit".',
                           '"mailgates" または "enterprise_audit" を 1 つ以上指定してください。'))
        return None
    seen: list[str] = []
    ok = True
    for item in value:
        if not isinstance(item, str) or item not in SERVICES:
            # Never render arbitrary values: a 5000-digit int cannot even be turned into text.
            shown = display(item, 40) if isinstance(item, str) else f"a {type(item).__name__}"
            errors.append(_err("services", "unknown_service",
                               f"'{shown}' is not a service; use \"mailgates\" and/or \"enterprise_audit\".",
                               f"'{shown}' はサービス名ではありません。\"mailgates\" または \"enterprise_audit\" を指定してください。"))
            ok = False
        elif item in seen:
            errors.append(_err("services", "duplicate_service", f"'{item}' is listed twice; list each service once.",
                               f"'{item}' が 2 回指定されています。各サービスは 1 回だけ指定してください。"))
            ok = False
        else:
            seen.append(item)
    if not ok:
        return None
    return tuple(s for s in SERVICES if s in seen)


def _domain(value: str) -> str | None:
    """A lower-case DNS name with at least two labels, or None."""
    name = value.lower()
    if len(name) > 253 or "." not in name:
        return None
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return None
    return name


def _email(value: str) -> str | None:
    """The address with its domain lower-cased, or None when it is not a plain address."""
    if len(value) > 254 or value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        return None
    name = _domain(domain)
    return None if name is None else f"{local}@{name}"


def _check_journal(obj: Mapping[str, Any], errors: list[FieldError], settings: Settings) -> str | None:
    value = _string(obj, "journal_report_address", errors, required=True,
                    why_en=" for enterprise_audit", why_ja="（enterprise_audit の場合）")
    if value is None:
        return None
    address = _email(value)
    if address is None:
        errors.append(_err("journal_report_address", "invalid_email",
                           "'journal_report_address' must be an address like xxxxxx@cs-365.cybermail.jp "
                           "(the journal report destination on the activation notice).",
                           "'journal_report_address' は xxxxxx@cs-365.cybermail.jp のような形式で指定してください"
                           "（開通通知書のジャーナルレポート送信先）。"))
        return None
    domain = address.rsplit("@", 1)[1]
    if domain not in settings.allowed_journal_domains:
        allowed = ", ".join(sorted(settings.allowed_journal_domains))
        errors.append(_err("journal_report_address", "domain_not_allowed",
                           f"journal domain '{domain}' is not an Enterprise Audit domain; use one of: {allowed}.",
                           f"ジャーナル ドメイン '{domain}' は Enterprise Audit のドメインではありません。次のいずれかを指定してください: {allowed}"))
        return None
    return address


def _check_ndr_address(obj: Mapping[str, Any], errors: list[FieldError], tenant_domain: str | None,
                       settings: Settings) -> str | None:
    """Where Exchange sends undeliverable journal reports: a plain address outside the tenant.

    Like the journaling mailbox it can't be an Exchange Online mailbox (Set-TransportConfig.md),
    so not `*.onmicrosoft.com` or the tenant's domain; and not in a journal domain, because it
    receives exactly the reports that the journal destination could not take.
    """
    value = _string(obj, "journal_ndr_address", errors, required=False)
    if value is None:
        return None
    address = _email(value)
    if address is None:
        errors.append(_err("journal_ndr_address", "invalid_email",
                           "'journal_ndr_address' must be an address like journal-ndr@example.com.",
                           "'journal_ndr_address' は journal-ndr@example.com のような形式で指定してください。"))
        return None
    domain = address.rsplit("@", 1)[1]
    if _is_tenant_domain(domain, tenant_domain):
        errors.append(_err("journal_ndr_address", "recipient_in_tenant",
                           "'journal_ndr_address' must be outside Exchange Online (not *.onmicrosoft.com or the "
                           "tenant's domain); use an external mailbox that is monitored.",
                           "'journal_ndr_address' は Exchange Online 外（*.onmicrosoft.com やテナントのドメイン以外）の、"
                           "確認できる外部のメールアドレスを指定してください。"))
        return None
    if any(domain == d or domain.endswith("." + d) for d in settings.allowed_journal_domains):
        errors.append(_err("journal_ndr_address", "recipient_in_journal_domain",
                           "'journal_ndr_address' must not be in an Enterprise Audit journal domain: it receives the "
                           "reports that domain could not take. Use another external mailbox.",
                           "'journal_ndr_address' に Enterprise Audit のジャーナル ドメインは使えません（そのドメインが"
                           "受け取れなかったレポートの送信先です）。別の外部メールアドレスを指定してください。"))
        return None
    return address


def _check_mx_host(obj: Mapping[str, Any], errors: list[FieldError], settings: Settings) -> str | None:
    value = _string(obj, "mx_host", errors, required=True, why_en=" for mailgates", why_ja="（mailgates の場合）")
    if value is None:
        return None
    host = value.lower()
    if host.endswith("."):
        host = host[:-1]
    if host not in settings.allowed_smart_hosts:
        allowed = ", ".join(sorted(settings.allowed_smart_hosts))
        errors.append(_err("mx_host", "host_not_allowed",
                           f"'{display(value)}' is not a MailGates host; use the MX record on the activation notice, one of: {allowed}.",
                           f"'{display(value)}' は MailGates のホストではありません。開通通知書の MX レコード（{allowed} のいずれか）を指定してください。"))
        return None
    return host


def _is_tenant_domain(domain: str, tenant_domain: str | None) -> bool:
    return domain == "onmicrosoft.com" or domain.endswith(".onmicrosoft.com") or domain == tenant_domain


def _check_recipient(obj: Mapping[str, Any], errors: list[FieldError], tenant_domain: str | None,
                     settings: Settings) -> str | None:
    value = _string(obj, "validation_recipient", errors, required=True,
                    why_en=" for mailgates", why_ja="（mailgates の場合）")
    if value is None:
        return None
    address = _email(value)
    if address is None:
        errors.append(_err("validation_recipient", "invalid_email",
                           "'validation_recipient' must be an address like adm@example.com.",
                           "'validation_recipient' は adm@example.com のような形式で指定してください。"))
        return None
    if _is_tenant_domain(address.rsplit("@", 1)[1], tenant_domain):
        errors.append(_err("validation_recipient", "recipient_in_tenant",
                           "'validation_recipient' must be outside the tenant (not *.onmicrosoft.com or the tenant's "
                           "domain); use an external mailbox that can send and receive mail.",
                           "'validation_recipient' はテナント外のアドレス（*.onmicrosoft.com やテナントのドメイン以外）で、"
                           "送受信できる外部のメールアドレスを指定してください。"))
        return None
    domain = address.rsplit("@", 1)[1]
    if any(domain == d or domain.endswith("." + d) for d in settings.allowed_journal_domains):
        # Mail to a journal domain rides the more specific Enterprise Audit connector, so a
        # MailGates test message there would never reach MailGates and validation would fail.
        errors.append(_err("validation_recipient", "recipient_in_journal_domain",
                           "'validation_recipient' must not be in an Enterprise Audit journal domain; use an external mailbox that can send and receive mail.",
                           "'validation_recipient' に Enterprise Audit のジャーナル ドメインは使えません。送受信できる外部のメールアドレスを指定してください。"))
        return None
    return address


def _check_tenant_domain(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = _string(obj, "tenant_domain", errors, required=False)
    if value is None:
        return None
    domain = _domain(value.rstrip("."))
    if domain is None or not domain.endswith(".onmicrosoft.com") or domain.count(".") != 2:
        errors.append(_err("tenant_domain", "invalid_tenant_domain",
                           "'tenant_domain' must be the tenant's initial domain, like contoso.onmicrosoft.com.",
                           "'tenant_domain' は contoso.onmicrosoft.com のようなテナントの初期ドメインで指定してください。"))
        return None
    return domain


def _check_text(obj: Mapping[str, Any], field: str, errors: list[FieldError]) -> str | None:
    value = _string(obj, field, errors, required=False)
    if value is not None and len(value) > _MAX_TEXT:
        errors.append(_err(field, "too_long", f"'{field}' is longer than {_MAX_TEXT} characters; shorten it.",
                           f"'{field}' が {_MAX_TEXT} 文字を超えています。短くしてください。"))
        return None
    return value


def _check_issued_at(obj: Mapping[str, Any], errors: list[FieldError]) -> str | None:
    value = _string(obj, "issued_at", errors, required=False)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    offset = parsed.utcoffset() if parsed is not None else None
    if parsed is None or offset is None or "T" not in value.upper():
        errors.append(_err("issued_at", "invalid_timestamp",
                           "'issued_at' must be an ISO 8601 timestamp with an offset, like 2026-04-01T09:00:00+09:00.",
                           "'issued_at' は 2026-04-01T09:00:00+09:00 のようなオフセット付き ISO 8601 形式で指定してください。"))
        return None
    low, high = ISSUED_AT_RANGE
    try:
        instant = parsed.astimezone(UTC) if abs(offset) <= _MAX_OFFSET else None
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is after the last instant a datetime holds
        instant = None
    if instant is None or not low <= instant < high:
        errors.append(_err("issued_at", "out_of_range",
                           f"'issued_at' must be between {low.year} and {high.year - 1} with an offset between -14:00 "
                           "and +14:00, like 2026-04-01T09:00:00+09:00; check the date on the activation notice.",
                           f"'issued_at' は {low.year}～{high.year - 1} 年、オフセット -14:00～+14:00 の範囲で指定してください"
                           "（例: 2026-04-01T09:00:00+09:00）。開通通知書の日付を確認してください。"))
        return None
    # One instant, one text: the same notice re-sent with another offset must hash the same.
    return instant.isoformat().replace("+00:00", "Z")
