"""Usernames: one rule shared by the admin CLI, the relay and clients."""

from __future__ import annotations

import re

from hushwire.common.errors import ErrorCode, RequestError, echo

# Lower-case ASCII only, so two names can never look alike on screen (no homoglyphs),
# and nothing that a terminal or a shell would interpret.
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,31}")


def is_valid_username(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_username(name: object) -> str:
    """Return `name` if valid, else raise a BAD_REQUEST error that explains the rule."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    raise RequestError(
        ErrorCode.BAD_REQUEST,
        f"invalid username {echo(name)}: 1-32 characters, a-z first, then a-z 0-9 _ . -",
    )
