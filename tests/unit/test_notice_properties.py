"""Properties of notice parsing: whatever arrives, the outcome is a valid notice or a NoticeError.

A notice is untrusted input that decides where a customer's mail goes. Whatever the bytes,
parsing yields either an ActivationNotice whose every routing value is on an allow-list, or a
NoticeError naming at least one field; never another exception, which would send the queue
message to the poison queue instead of recording a clear rejection.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.connectors import desired_connectors
from shared.errors import ErrorCode
from shared.notice import ALLOWED_KEYS, MAX_NOTICE_BYTES, SERVICES, ActivationNotice, NoticeError, parse_notice
from shared.settings import Settings
from shared.text import display, forbidden_characters

# Moderate budgets: the whole module runs in a few seconds on two shared cores.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DEFAULT = Settings()
CUSTOM = Settings(
    allowed_smart_hosts=frozenset({"relay.mailgates.example", "mgf.cybermail.jp"}),
    allowed_journal_domains=frozenset({"journal.example.jp"}),
)
ANY_SETTINGS = st.sampled_from([DEFAULT, CUSTOM])

LOWER_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NOTICE_ID = re.compile(r"[A-Za-z0-9._-]{0,63}[A-Za-z0-9_-]")
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

# --- strategies -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
# Text a notice may carry anywhere: no control characters, lone surrogates or noncharacters.
clean_text = st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), max_size=20).filter(
    lambda t: not forbidden_characters(t))
clean_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | clean_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(clean_text, inner, max_size=4),
    max_leaves=10,
)


def any_case(text: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(text), max_size=len(text))
    return flips.map(lambda up: "".join(c.upper() if u else c for c, u in zip(text, up, strict=True)))


local_parts = st.from_regex(r"[A-Za-z0-9+_-]{1,10}(\.[A-Za-z0-9+_-]{1,10}){0,2}", fullmatch=True)
free_text = st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), max_size=40).filter(
    lambda t: not forbidden_characters(t))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# Local times a day inside the accepted window, so that no offset takes them out of it.
timestamps = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30),
                          timezones=offsets).map(lambda d: d.isoformat())


@st.composite
def valid_notices(draw: st.DrawFn, allowed: Settings) -> dict[str, Any]:
    """A notice that is valid under `allowed`, in any key order, case, and with ignorable extras."""
    services = draw(st.sampled_from([
        ["mailgates"], ["enterprise_audit"], ["mailgates", "enterprise_audit"], ["enterprise_audit", "mailgates"],
    ]))
    data: dict[str, Any] = {
        "notice_id": draw(st.from_regex(r"[A-Za-z0-9._-]{0,63}[A-Za-z0-9_-]", fullmatch=True)),
        "tenant_id": draw(st.uuids().map(str).flatmap(any_case)),
        "services": services,
    }
    if "enterprise_audit" in services:
        domain = draw(st.sampled_from(sorted(allowed.allowed_journal_domains)).flatmap(any_case))
        data["journal_report_address"] = f"{draw(local_parts)}@{domain}"
    elif draw(st.booleans()):
        data["journal_report_address"] = draw(clean_json_values)  # not requested: ignored whatever it is
    if "mailgates" in services:
        host = draw(st.sampled_from(sorted(allowed.allowed_smart_hosts)).flatmap(any_case))
        data["mx_host"] = host + draw(st.sampled_from(["", "."]))
        domain = draw(st.sampled_from(["example.com", "example.org", "mail.example.co.jp", "notonmicrosoft.com"]))
        data["validation_recipient"] = f"{draw(local_parts)}@{draw(any_case(domain))}"
    elif draw(st.booleans()):
        data["mx_host"] = draw(clean_json_values)
        data["validation_recipient"] = draw(clean_json_values)
    if draw(st.booleans()):
        data["tenant_domain"] = draw(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)) + ".onmicrosoft.com"
    for key in ("contract_id", "customer_name"):
        if draw(st.booleans()):
            data[key] = draw(free_text)
    if draw(st.booleans()):
        data["issued_at"] = draw(timestamps)
    return dict(draw(st.permutations(list(data.items()))))


@st.composite
def notices_and_settings(draw: st.DrawFn) -> tuple[dict[str, Any], Settings]:
    allowed = draw(ANY_SETTINGS)
    return draw(valid_notices(allowed)), allowed


# --- the checks every outcome must pass -----------------------------------------------------


def outcome(data: str | bytes | dict[str, Any], allowed: Settings) -> ActivationNotice | NoticeError:
    """Parse; let anything but a NoticeError escape so that hypothesis reports it."""
    try:
        notice = parse_notice(data, allowed)
    except NoticeError as exc:
        check_error(exc)
        return exc
    check_notice(notice, allowed)
    return notice


def check_error(exc: NoticeError) -> None:
    assert exc.code is ErrorCode.NOTICE_INVALID
    assert len(exc.errors) >= 1
    for error in exc.errors:
        assert isinstance(error.field, str)  # may be "": an unknown key is named as it was sent
        assert re.fullmatch(r"[a-z_]+", error.code)
        assert error.message.strip()
        assert JAPANESE.search(error.message_ja)
    exc.to_dict()


def check_notice(notice: ActivationNotice, allowed: Settings) -> None:
    assert NOTICE_ID.fullmatch(notice.notice_id)
    assert LOWER_GUID.fullmatch(notice.tenant_id)
    assert notice.services
    assert notice.services == tuple(s for s in SERVICES if s in notice.services)
    if "mailgates" in notice.services:
        assert notice.mx_host in allowed.allowed_smart_hosts
        assert notice.validation_recipient is not None
        recipient_domain = notice.validation_recipient.rsplit("@", 1)[1]
        assert recipient_domain == recipient_domain.lower()
        assert recipient_domain != "onmicrosoft.com"
        assert not recipient_domain.endswith(".onmicrosoft.com")
        assert recipient_domain != notice.tenant_domain
    else:
        assert notice.mx_host is None
        assert notice.validation_recipient is None
    if "enterprise_audit" in notice.services:
        assert notice.journal_domain in allowed.allowed_journal_domains
    else:
        assert notice.journal_report_address is None
    assert re.fullmatch(r"[0-9a-f]{64}", notice.content_hash)
    # A normalised notice is a fixed point of parsing.
    assert parse_notice(notice.to_dict(), allowed) == notice

    specs = desired_connectors(notice, allowed)
    assert [spec.service for spec in specs] == list(notice.services)
    allowed_routes = {"*"} | {f"*.{domain}" for domain in allowed.allowed_journal_domains}
    for spec in specs:
        assert set(spec.smart_hosts) <= allowed.allowed_smart_hosts
        assert set(spec.recipient_domains) <= allowed_routes
        assert spec.validation_recipients
        assert "ValidationRecipients" not in spec.new_parameters()
        if spec.service == "mailgates":
            assert spec.recipient_domains == ("*",)
            assert len(spec.smart_hosts) == 1
            assert spec.name == allowed.mg_connector_name
        else:
            assert spec.recipient_domains != ("*",)
            assert spec.smart_hosts == ()
            assert spec.name == allowed.ea_connector_name


def same(a: ActivationNotice | NoticeError, b: ActivationNotice | NoticeError) -> bool:
    if isinstance(a, NoticeError) and isinstance(b, NoticeError):
        return [e.to_dict() for e in a.errors] == [e.to_dict() for e in b.errors]
    return a == b


# --- properties -----------------------------------------------------------------------------


@FAST
@given(value=json_values, allowed=ANY_SETTINGS)
def test_any_json_value_gives_a_notice_or_a_notice_error(value: Any, allowed: Settings) -> None:
    text = json.dumps(value)
    result = outcome(text, allowed)
    assert same(result, outcome(text.encode("utf-8"), allowed))
    if not isinstance(value, dict):
        assert isinstance(result, NoticeError)
        assert [(e.field, e.code) for e in result.errors] == [("$", "not_object")]


@FAST
@given(
    data=st.dictionaries(st.sampled_from(ALLOWED_KEYS) | st.text(max_size=12), json_values, max_size=12),
    allowed=ANY_SETTINGS,
)
def test_any_object_gives_a_notice_or_a_notice_error_the_same_from_text_or_mapping(
    data: dict[str, Any], allowed: Settings
) -> None:
    from_mapping = outcome(data, allowed)
    from_text = outcome(json.dumps(data, ensure_ascii=False), allowed)
    assert same(from_mapping, from_text)
    unknown = [key for key in data if key not in ALLOWED_KEYS]
    if unknown:
        assert isinstance(from_mapping, NoticeError)
        named = {e.field for e in from_mapping.errors}
        # an unknown key is named as it was sent; one with characters that are not text, escaped
        assert {e.field for e in from_mapping.errors if e.code == "unknown_key"} == {
            key for key in unknown if not forbidden_characters(key)}
        assert {display(key, 64) for key in unknown if forbidden_characters(key)} <= named


@FAST
@given(pair=notices_and_settings())
def test_a_valid_notice_always_parses_and_its_invariants_hold(pair: tuple[dict[str, Any], Settings]) -> None:
    data, allowed = pair
    result = outcome(data, allowed)
    assert isinstance(result, ActivationNotice)
    text = json.dumps(data, ensure_ascii=False)
    assert outcome(text, allowed) == result
    assert outcome(b"\xef\xbb\xbf" + text.encode("utf-8"), allowed) == result


@FAST
@given(pair=notices_and_settings())
def test_content_hash_ignores_key_order_and_the_case_of_the_guid(pair: tuple[dict[str, Any], Settings]) -> None:
    data, allowed = pair
    variant = dict(reversed(list(data.items())))
    variant["tenant_id"] = data["tenant_id"].upper()
    variant["services"] = list(reversed(data["services"]))
    assert parse_notice(variant, allowed).content_hash == parse_notice(data, allowed).content_hash


@st.composite
def mutated_notices(draw: st.DrawFn) -> tuple[dict[str, Any], Settings, str]:
    """A valid notice with one thing broken or changed; the kind of mutation rides along."""
    data, allowed = draw(notices_and_settings())
    key = draw(st.sampled_from(sorted(data)))
    kind = draw(st.sampled_from(["drop", "retype", "unicode", "huge", "nest", "unknown_key", "bad_host"]))
    value = data[key]
    if kind == "drop":
        del data[key]
    elif kind == "retype":
        data[key] = draw(json_values.filter(lambda v: type(v) is not type(value)))
    elif kind == "unicode":
        text = value if isinstance(value, str) else json.dumps(value)
        at = draw(st.integers(min_value=0, max_value=len(text)))
        data[key] = text[:at] + draw(st.text(min_size=1, max_size=5)) + text[at:]
    elif kind == "huge":
        data[key] = draw(st.sampled_from(["x", "社", "a@b.", "\u0000"])) * draw(st.integers(200, 20_000))
    elif kind == "nest":
        data[key] = draw(st.sampled_from([{"value": value}, [value], {key: value}]))
    elif kind == "unknown_key":
        name = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in ALLOWED_KEYS))
        data[name] = draw(json_values)
    else:
        data["mx_host"] = draw(st.sampled_from(["*", "smtp.example.net", "mgf.cybermail.jp.evil.example", ""]))
    return data, allowed, kind


@SLOW
@given(case=mutated_notices())
def test_a_mutated_notice_gives_a_notice_or_a_notice_error(case: tuple[dict[str, Any], Settings, str]) -> None:
    data, allowed, kind = case
    result = outcome(data, allowed)
    text = json.dumps(data, ensure_ascii=False)
    text_result = outcome(text, allowed)
    if len(text.encode("utf-8")) <= MAX_NOTICE_BYTES:
        assert same(result, text_result)
    else:
        assert isinstance(text_result, NoticeError)
        assert [(e.field, e.code) for e in text_result.errors] == [("$", "too_large")]
    if kind == "unknown_key":
        assert isinstance(result, NoticeError)
    required = {"notice_id", "tenant_id", "services"}
    if isinstance(result, ActivationNotice):
        assert required <= set(data)


@FAST
@given(blob=st.binary(max_size=300), allowed=ANY_SETTINGS)
def test_random_bytes_give_a_notice_error(blob: bytes, allowed: Settings) -> None:
    assert isinstance(outcome(blob, allowed), NoticeError)


@FAST
@given(text=st.text(max_size=300), allowed=ANY_SETTINGS)
def test_random_text_gives_a_notice_error(text: str, allowed: Settings) -> None:
    assert isinstance(outcome(text, allowed), NoticeError)


@SLOW
@given(pair=notices_and_settings(), junk=st.binary(min_size=1, max_size=8), where=st.integers(min_value=0))
def test_a_valid_notice_with_random_bytes_spliced_in_never_escapes(
    pair: tuple[dict[str, Any], Settings], junk: bytes, where: int
) -> None:
    data, allowed = pair
    raw = json.dumps(data, ensure_ascii=False).encode("utf-8")
    at = where % (len(raw) + 1)
    outcome(raw[:at] + junk + raw[at:], allowed)


@SLOW
@given(pair=notices_and_settings(), extra=st.integers(min_value=1, max_value=3 * MAX_NOTICE_BYTES))
def test_a_notice_over_the_cap_is_too_large_whatever_it_holds(
    pair: tuple[dict[str, Any], Settings], extra: int
) -> None:
    data, allowed = pair
    raw = json.dumps(data, ensure_ascii=False).encode("utf-8")
    padded = raw[:-1] + b" " * (MAX_NOTICE_BYTES - len(raw) + extra) + b"}"
    result = outcome(padded, allowed)
    assert isinstance(result, NoticeError)
    assert [(e.field, e.code) for e in result.errors] == [("$", "too_large")]
