"""The text rules every boundary shares: what a notice may hold, what the store writes, what a message quotes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.text import (
    MAX_ORIGINAL_BYTES,
    clean,
    clean_value,
    decode_body,
    display,
    forbidden_characters,
    is_storable,
    keep_raw,
    original_bytes,
    restore_raw,
)

NOT_TEXT = ["\ud800", "\udbff", "\udc00", "\udfff", "\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe",
            "\U0010ffff", "\x00", "\x08", "\x0b", "\x0c", "\x1f"]


@pytest.mark.parametrize("ch", NOT_TEXT)
def test_what_cannot_be_stored_becomes_the_replacement_character(ch: str) -> None:
    assert not is_storable(f"a{ch}b")
    assert clean(f"a{ch}b") == "a\ufffdb"
    assert clean(f"a{ch}b").encode("utf-8")


@pytest.mark.parametrize("text", ["plain", "行1\n行2\r\n\tタブ", "🏢 MAILGATESΣ", "\x7f\x85", "\ufffd", ""])
def test_text_that_can_be_stored_is_left_alone(text: str) -> None:
    assert is_storable(text) and clean(text) is text


def test_a_surrogate_pair_written_as_two_code_points_is_joined() -> None:
    assert clean("\ud83c\udfe2") == "🏢"
    assert clean("\ud83c\ud83c\udfe2") == "\ufffd🏢"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_cleaning_never_lengthens_is_idempotent_and_always_encodes(text: str) -> None:
    cleaned = clean(text)
    assert len(cleaned.encode("utf-16-le")) <= len(text.encode("utf-16-le", "surrogatepass"))
    assert clean(cleaned) == cleaned and is_storable(cleaned)
    cleaned.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.text() | st.integers() | st.none(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)))
def test_cleaned_json_data_always_encodes_and_json_text_stays_json(value: object) -> None:
    cleaned = clean_value(value)
    text = json.dumps(cleaned, ensure_ascii=False)
    text.encode("utf-8")
    # cleaning the JSON text instead gives valid JSON that encodes (the API's last line of defence)
    response = clean(json.dumps(value, ensure_ascii=False))
    response.encode("utf-8")
    assert clean_value(json.loads(response)) == cleaned


def test_a_notice_field_may_hold_no_control_character_surrogate_or_noncharacter() -> None:
    assert forbidden_characters("a\tb\nc\x7f\x9f\ud800\uffff\ufdd0\x00\x00") == [
        "\t", "\n", "\x7f", "\x9f", "\ud800", "\uffff", "\ufdd0", "\x00"]
    assert forbidden_characters("コントソ株式会社 🏢 Ünïcödé \u3000") == []


def test_display_quotes_bad_text_escaped_and_short() -> None:
    assert display("a\ud800b\x00\\") == "a\\ud800b\\u0000\\\\"
    assert display("\U0010ffff") == "\\U0010ffff"
    assert display("x" * 100, 10) == "x" * 10 + "…"
    assert not forbidden_characters(display("".join(NOT_TEXT)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_come_back_exactly_from_their_stored_form(data: bytes) -> None:
    text = decode_body(data)
    assert original_bytes(text) == data
    preview, original = keep_raw(text)
    assert is_storable(preview)
    assert restore_raw(preview, original) == data
    assert (original is None) == (preview == text)


def test_a_str_with_lone_surrogates_keeps_them_in_its_original() -> None:
    preview, original = keep_raw('{"k": "\ud800"}')
    assert preview == '{"k": "\ufffd"}'
    assert restore_raw(preview, original) == b'{"k": "\xed\xa0\x80"}'  # the surrogatepass form


def test_the_original_is_kept_up_to_its_cap() -> None:
    data = b"\xff" * (MAX_ORIGINAL_BYTES + 10)
    preview, original = keep_raw(decode_body(data))
    assert original is not None and len(original) <= 32 * 1024
    assert restore_raw(preview, original) == data[:MAX_ORIGINAL_BYTES]
    assert restore_raw("plain", "not base64!") == b"plain"
