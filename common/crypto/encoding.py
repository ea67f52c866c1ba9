"""Byte encodings shared by the crypto modules: length prefixes and strict msgpack.

Everything signed, hashed or used as associated data is built with `fields()`, so two
different field lists can never produce the same bytes. Persisted structures and the
version-1 envelope use canonical msgpack: accepted only if re-encoding the decoded value
gives back exactly the same bytes, so one value has one encoding. The version-2
envelope authenticates the bytes it received instead, so it accepts any valid encoding
(`unpack_strict`).
"""

from __future__ import annotations

from typing import Any

import msgpack

_MAX_FIELD = 0xFFFF


def fields(*parts: bytes) -> bytes:
    """Concatenate byte strings, each behind a 2-byte big-endian length (injective)."""
    out = bytearray()
    for part in parts:
        if len(part) > _MAX_FIELD:
            raise ValueError("field too long to encode")
        out += len(part).to_bytes(2, "big")
        out += part
    return bytes(out)


def pack(value: Any) -> bytes:
    """msgpack with bin for bytes and str for text (use_bin_type)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack_strict(data: bytes) -> Any:
    """Decode one msgpack value (any valid encoding of it); ValueError for anything else.

    Trailing bytes, invalid UTF-8 in a str and extension types are errors.
    """
    if not isinstance(data, bytes):
        raise ValueError("expected bytes")
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ValueError(f"not valid msgpack: {type(exc).__name__}") from None
    if _has_ext(value):
        raise ValueError("msgpack extension types are not allowed")
    return value


def _has_ext(value: Any) -> bool:
    if isinstance(value, msgpack.ExtType):
        return True
    if isinstance(value, list):
        return any(_has_ext(v) for v in value)
    if isinstance(value, dict):
        return any(_has_ext(k) or _has_ext(v) for k, v in value.items())
    return False


def unpack_canonical(data: bytes) -> Any:
    """Decode msgpack strictly; ValueError unless `data` is the canonical encoding."""
    value = unpack_strict(data)
    if pack(value) != data:
        raise ValueError("non-canonical msgpack encoding")
    return value


def expect_list(value: Any, length: int) -> list[Any]:
    """`value` if it is a list of exactly `length` items, else ValueError."""
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"expected a list of {length} items")
    return value


def expect_bytes(value: Any, length: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        raise ValueError("expected bytes" + (f" of length {length}" if length else ""))
    return value


def expect_int(value: Any, low: int, high: int) -> int:
    """An int (not bool) with low <= value <= high, else ValueError."""
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"expected an integer in [{low}, {high}]")
    return value


def expect_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value
