"""Received text made safe to print on a terminal, and the text codec of a message.

A peer controls every byte of what we display, so before display we neutralise what a
terminal would interpret instead of showing: escape sequences (colours, cursor moves,
window titles, OSC 52 clipboard writes, hyperlinks), C0 controls except newline and tab
(a carriage return could overwrite a line), DEL, C1 controls (0x9B is a one-byte CSI on
some terminals) and the bidi overrides/isolates that reorder what follows them (the
"Trojan Source" trick, CVE-2021-42574). The TUI and the CLI use this one function for
everything a peer or the relay supplied (texts, names, reasons, error messages), and
`safe_line` (the same, on one bounded line) where a single line is expected.
"""

from __future__ import annotations

import re
from typing import Final

from hushwire.common.chat_groups import ContentType
from hushwire.common.crypto.encoding import expect_list, expect_str, pack, unpack_canonical

REPLACEMENT: Final = "\ufffd"

# Strings (OSC, DCS, SOS, PM, APC) run to a terminator; CSI has parameters then a final
# byte; anything else after ESC is a two-character escape. The C1 forms start with
# 0x9B (CSI), 0x9D (OSC), 0x90 (DCS), 0x98 (SOS), 0x9E (PM), 0x9F (APC).
_ESCAPES: Final = re.compile(
    r"(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -~]?",
    re.DOTALL,
)
_CONTROLS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

LINE_LIMIT: Final = 300  # characters of a relay-supplied name or error shown on one line

TEXT_VERSION: Final = 1  # first byte of a message plaintext: the format of what follows
RESET_FORMAT: Final = int(ContentType.SESSION_RESET)  # docs/protocol.md, content types
SENT_COPY_FORMAT: Final = int(ContentType.SENT_COPY)


def safe_for_terminal(text: str) -> str:
    """`text` with escape sequences removed and other control characters replaced.

    Newlines and tabs are kept; every other C0 control, DEL, C1 control and bidi
    override/isolate becomes U+FFFD, so tampering is visible rather than silent.
    """
    return _CONTROLS.sub(REPLACEMENT, _ESCAPES.sub("", text))


def safe_line(text: str, limit: int = LINE_LIMIT) -> str:
    """`safe_for_terminal` on one line of at most `limit` characters (then "...")."""
    line = " ".join(safe_for_terminal(text[: limit * 2]).split("\n")).replace("\t", " ")
    if len(line) <= limit and len(text) <= limit * 2:
        return line
    return line[: limit - 3] + "..."


def encode_reset() -> bytes:
    """The plaintext of a session reset: "my session with you could not decrypt what you
    sent; this message starts a new one" (format byte RESET_FORMAT, nothing after)."""
    return bytes([RESET_FORMAT])


def encode_text(text: str) -> bytes:
    """The plaintext of a chat message: a format byte, then UTF-8.

    The format byte leaves room for other kinds of content later without guessing.
    """
    return bytes([TEXT_VERSION]) + text.encode("utf-8")


def decode_text(plaintext: bytes) -> str:
    """Inverse of `encode_text`; ValueError for an unknown format or invalid UTF-8."""
    if not plaintext or plaintext[0] != TEXT_VERSION:
        raise ValueError("unknown message format")
    return plaintext[1:].decode("utf-8")


def encode_sent_copy(to: str, text: str) -> bytes:
    """The plaintext that tells our other devices what this one sent to `to` (so each
    device shows the whole conversation): SENT_COPY_FORMAT, then msgpack [to, text]."""
    return bytes([SENT_COPY_FORMAT]) + pack([to, text])


def decode_sent_copy(plaintext: bytes) -> tuple[str, str] | None:
    """(to, text) of a sent copy; None if `plaintext` is not one; ValueError if malformed."""
    if not plaintext or plaintext[0] != SENT_COPY_FORMAT:
        return None
    to, text = expect_list(unpack_canonical(plaintext[1:]), 2)
    return expect_str(to), expect_str(text)
