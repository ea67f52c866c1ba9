"""bench/xmpp.py's scanning helpers: element ends, attributes and text, without XML."""

from __future__ import annotations

from bench.xmpp import attribute, element, text_of

STREAM = (
    b"<a xmlns='urn:xmpp:sm:3' h='12'/>"
    b"<message to='u1@localhost' type='chat'><body>00ff</body></message>"
    b"<presence from='u1@localhost/bench'"
)


def test_empty_element_ends_at_its_slash() -> None:
    assert element(STREAM, 0) == (STREAM.index(b"<message"), True)


def test_element_with_content_ends_after_its_closing_tag() -> None:
    start = STREAM.index(b"<message")
    assert element(STREAM, start) == (STREAM.index(b"<presence"), True)


def test_truncated_element_is_incomplete() -> None:
    start = STREAM.index(b"<presence")
    assert element(STREAM, start) == (start, False)
    assert element(b"<message><body>1</bo", 0) == (0, False)


def test_attribute_either_quote() -> None:
    assert attribute(b"<a xmlns='urn:xmpp:sm:3' h='12'/>", b"h") == b"12"
    assert attribute(b'<a h="7" xmlns="urn:xmpp:sm:3"/>', b"h") == b"7"
    assert attribute(b"<a xmlns='urn:xmpp:sm:3'/>", b"h") == b""


def test_text_of() -> None:
    assert text_of(b"<challenge xmlns='x'>cj1hYmM=</challenge>", b"challenge") == b"cj1hYmM="
    assert text_of(b"<success xmlns='x'/>", b"success") == b""
    assert text_of(b"<failure/>", b"success") == b""
