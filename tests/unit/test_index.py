"""The index's pure parts: key ranges that the service accepts and that hold what they promise."""

from __future__ import annotations

import pytest

from shared import index as ix


def utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


@pytest.mark.parametrize("last", ["a", "|", "\ud7ff", "\ue000", "\uffef", "\ufffd", "\U0001f600", "\U0010fffd",
                                  "\U0010ffff"])
def test_a_range_end_is_text_and_above_every_string_with_the_prefix_in_either_order(last: str) -> None:
    prefix = "c|x" + last
    end = ix.after_prefix(prefix)
    assert end.encode("utf-8")  # sendable: no lone surrogate (a noncharacter such as U+FFFE is still text)
    for tail in ("", "\x00", "z", "\uffff", "\U0010ffff" * 3):
        assert prefix + tail < end  # code-point order (Python, UTF-8 bytes)
        assert utf16(prefix + tail) < utf16(end)  # UTF-16 order (the table service)
    assert prefix < end and utf16(prefix) < utf16(end)
