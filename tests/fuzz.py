"""Fuzzing the notice parser: any input gives a valid notice or a NoticeError, and either can be stored and shown.

The strategies start from a valid notice and break it the ways hostile senders and broken
contract systems do: characters that are not text in any key or value (raw, or as JSON
escapes that decode to lone surrogates), timestamps at the calendar's edges, notice_ids that
a URL would rewrite, wrong types, deep nesting, bytes that are not UTF-8, and values that are
not JSON at all. Every outcome is checked:

* only `ActivationNotice` or `NoticeError` comes out, never another exception;
* a NoticeError's fields and messages are storable text (no character they complain about is
  echoed raw), and its `to_dict()` encodes as UTF-8 JSON;
* a notice's canonical JSON is storable text, and its notice_id survives a URL path.

`tests/unit/test_notice_fuzz.py` runs a few hundred cases with every `make test`;
`make fuzz` (`python -m tests.fuzz --examples 200000`) runs the long campaign and prints
how many cases ran, how long it took, and what it found.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.notice import ALLOWED_KEYS, ActivationNotice, NoticeError, parse_notice
from shared.settings import Settings
from shared.text import forbidden_characters, is_storable
from tests.hostile import SAMPLE

DEFAULT = Settings()
BASE_URL = "https://func.example/api/activations/"

# -- strategies ---------------------------------------------------------------------------------------

# Every code point, biased towards the ones that break things.
nasty_chars = st.one_of(
    st.characters(),  # anything, lone surrogates included
    st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ufffe", "\uffff", "\ufdd0", "\ufdef",
                     "\U0010ffff", "\U0001fffe", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u202e",
                     "\ufeff", "\\", '"', ".", "/", "%", "?", "#", "\t", "\n", "\r"]),
)
nasty_text = st.text(alphabet=nasty_chars, max_size=12)

edge_timestamps = st.one_of(
    st.datetimes(timezones=st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))).map(
        lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999+00:00",
                     "0001-01-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-01T24:00:00Z",
                     "2026-04-01T23:59:60Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
                     "2026-04-01T09:00:00+14:01", "2026-04-01T09:00:00-23:59", "+002026-04-01T00:00:00Z",
                     "2026-W14-3T09:00:00Z", "20260401T090000+0900", "2026-04-01T09:00:00+09:00:30"]),
)
notice_ids = st.one_of(
    st.text(alphabet=".-_aZ9", min_size=1, max_size=4),
    st.sampled_from([".", "..", "...", "ACT-1.", ".ACT", "ACT..1", "a" * 64, "a" * 65, "%2e%2e", "ACT/1"]),
    nasty_text,
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), nasty_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def hostile_objects(draw: st.DrawFn) -> dict[str, Any]:
    """The sample notice with a handful of its fields broken."""
    data: dict[str, Any] = dict(SAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(ALLOWED_KEYS) | nasty_text)
        kind = draw(st.sampled_from(["splice", "replace", "drop", "timestamp", "notice_id", "nest"]))
        if kind == "splice" and isinstance(data.get(key), str):
            at = draw(st.integers(0, len(data[key])))
            data[key] = data[key][:at] + draw(nasty_text) + data[key][at:]
        elif kind == "drop":
            data.pop(key, None)
        elif kind == "timestamp":
            data["issued_at"] = draw(edge_timestamps)
        elif kind == "notice_id":
            data["notice_id"] = draw(notice_ids)
        elif kind == "nest":
            data[key] = draw(st.sampled_from([[data.get(key)], {"value": data.get(key)}]))
        else:
            data[key] = draw(json_values)
    return data


@st.composite
def hostile_bodies(draw: st.DrawFn) -> str | bytes:
    """A hostile object as a queue or HTTP body: JSON text, UTF-8 bytes, or bytes spliced with junk."""
    text = json.dumps(draw(hostile_objects()), ensure_ascii=draw(st.booleans()))
    form = draw(st.sampled_from(["text", "bytes", "junk", "cut"]))
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate written out: not valid UTF-8
    if form == "text":
        return text
    if form == "bytes":
        return raw
    if form == "cut":
        return raw[: draw(st.integers(0, len(raw)))]
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.binary(min_size=1, max_size=6)) + raw[at:]


# Not only JSON: whatever a caller might hand the parser.
anything = st.one_of(
    st.none(), st.integers(), st.floats(), st.binary(max_size=64), nasty_text,
    st.dictionaries(st.integers() | st.none() | nasty_text, json_values, max_size=4),
    st.lists(json_values, max_size=3), st.builds(bytearray, st.binary(max_size=32)),
)

# -- the checks ---------------------------------------------------------------------------------------


def check(data: Any) -> ActivationNotice | NoticeError:
    """Parse `data` and check its outcome; anything but a NoticeError escapes (that is a finding)."""
    try:
        notice = parse_notice(data, DEFAULT)
    except NoticeError as exc:
        assert exc.errors
        for error in exc.errors:
            for text in (error.field, error.code, error.message, error.message_ja):
                assert isinstance(text, str) and is_storable(text) and not forbidden_characters(text), error
        json.dumps(exc.to_dict(), ensure_ascii=False).encode("utf-8")
        return exc
    assert is_storable(notice.canonical_json())
    notice.canonical_json().encode("utf-8")
    url = urljoin(BASE_URL, quote(notice.notice_id, safe=""))
    assert urlsplit(url).path == urlsplit(BASE_URL).path + notice.notice_id, notice.notice_id
    return notice


# -- the campaign ---------------------------------------------------------------------------------------


@dataclass
class Campaign:
    """One fuzzing run over several strategies; counts every case actually run."""

    examples: int
    cases: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)

    def run(self, name: str, strategy: st.SearchStrategy[Any]) -> None:
        self.cases[name] = 0
        self.accepted[name] = 0

        @settings(max_examples=self.examples, deadline=None, database=None, derandomize=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(data: Any) -> None:
            self.cases[name] += 1
            if isinstance(check(data), ActivationNotice):
                self.accepted[name] += 1

        one()


STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "hostile objects": hostile_objects(),
    "hostile bodies": hostile_bodies(),
    "anything": anything,
}


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200_000, help="cases in all, split over the strategies")
    args = parser.parse_args(argv)
    per = max(1, -(-args.examples // len(STRATEGIES)))  # rounded up: at least --examples in all
    campaign = Campaign(per)
    started = time.monotonic()
    finding: BaseException | None = None
    try:
        for name, strategy in STRATEGIES.items():
            campaign.run(name, strategy)
    except BaseException as exc:  # a finding of any kind is reported, then re-raised
        finding = exc
    elapsed = time.monotonic() - started
    total = sum(campaign.cases.values())
    for name, count in campaign.cases.items():
        out(f"{name:>16}: {count:>7} cases, {campaign.accepted[name]} parsed as valid notices")
    out(f"{total} cases in {elapsed:.0f} s ({total / max(elapsed, 1e-9):.0f}/s); "
        f"findings: {'none' if finding is None else type(finding).__name__}")
    if finding is not None:
        raise finding
    return 0


if __name__ == "__main__":
    sys.exit(main())
