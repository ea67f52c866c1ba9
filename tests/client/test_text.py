"""client/text.py: what reaches the terminal, and the message text codec."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hushwire.client.text import (
    REPLACEMENT,
    decode_text,
    encode_text,
    safe_for_terminal,
    safe_line,
)

FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, ünïcødé 😀", "plain text, ünïcødé 😀"),
        ("keep\nlines\tand tabs", "keep\nlines\tand tabs"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[2J\x1b[Hcleared", "cleared"),
        ("\x1b]0;window title\x07after", "after"),
        ("\x1b]52;c;Y2xpcGJvYXJk\x1b\\after", "after"),  # OSC 52 clipboard write
        ("\x1b]8;;https://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x9b31mC1 CSI", "C1 CSI"),
        ("over\rwrite", f"over{REPLACEMENT}write"),
        ("bell\x07 del\x7f", f"bell{REPLACEMENT} del{REPLACEMENT}"),
        ("abc\u202edcba", f"abc{REPLACEMENT}dcba"),
        ("x\u2066y\u2069", f"x{REPLACEMENT}y{REPLACEMENT}"),
        ("dangling \x1b", "dangling "),
        ("\x1bPq#0;2;0;0;0\x1b\\sixel", "sixel"),
    ],
)
def test_escapes_and_controls_are_neutralised(raw, shown):
    assert safe_for_terminal(raw) == shown


@given(st.text())
def test_nothing_a_terminal_interprets_survives(text):
    out = safe_for_terminal(text)
    assert "\x1b" not in out and not FORBIDDEN.search(out)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf"))))
def test_ordinary_text_is_unchanged(text):
    assert safe_for_terminal(text) == text


@given(st.text())
def test_text_codec_round_trips(text):
    assert decode_text(encode_text(text)) == text


@pytest.mark.parametrize("bad", [b"", b"\x02hi", b"\x01\xff\xfe"])
def test_unknown_format_or_bad_utf8_is_refused(bad):
    with pytest.raises(ValueError):
        decode_text(bad)


def test_safe_line_is_one_bounded_neutral_line():
    assert safe_line("a\nb\tc\x1b]0;t\x07d") == "a b cd"
    long = safe_line("\u202e" + "x" * 10_000, limit=50)
    assert len(long) == 50 and long.startswith("\ufffd") and long.endswith("...")
    assert safe_line("y" * 100 + "\x1b[2K" * 1000, limit=120).endswith("...")
