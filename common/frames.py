"""Frame codec: a 4-byte big-endian length, then a msgpack map.

Sans-I/O, as in python-websockets: `FrameDecoder.feed()` takes bytes in any chunking
and returns whole decoded maps; nothing here touches a socket. The size limit is
checked from the length prefix, before the payload is buffered.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import msgpack

from hushwire.common.errors import FrameTooLarge, LocalProtocolError, MalformedFrame

DEFAULT_MAX_FRAME = 64 * 1024
HEADER = struct.Struct(">I")


def _no_ext(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"msgpack extension type {code} is not allowed")


def encode_frame(message: Mapping[str, Any], *, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Pack one map into a length-prefixed frame; refuse to build an oversized one."""
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > max_size:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds the {max_size}-byte limit")
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> dict[str, Any]:
    """Unpack one frame body; anything but a map with a string `t` is malformed."""
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
        )
    except MalformedFrame:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, msgpack.UnpackException) as exc:
        # ExtraData, FormatError and StackError (nesting too deep) are ValueErrors.
        raise MalformedFrame(f"invalid msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise MalformedFrame("a frame body must be a msgpack map")
    if not isinstance(obj.get("t"), str):
        raise MalformedFrame("a frame must carry a string type `t`")
    return obj


class FrameDecoder:
    """Incremental decoder; after an error the stream is unusable and must be closed."""

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished frame (non-zero at EOF means cut mid-frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        pos = 0
        frames: list[dict[str, Any]] = []
        try:
            while True:
                if self._need is None:
                    if len(buf) - pos < HEADER.size:
                        return frames
                    (length,) = HEADER.unpack_from(buf, pos)
                    if length > self.max_size:
                        raise FrameTooLarge(
                            f"frame of {length} bytes exceeds the {self.max_size}-byte limit"
                        )
                    if length == 0:
                        raise MalformedFrame("empty frame")
                    pos += HEADER.size
                    self._need = length
                end = pos + self._need
                if len(buf) < end:
                    return frames
                payload = bytes(buf[pos:end])
                pos = end
                self._need = None
                frames.append(decode_payload(payload))
        finally:
            # One compaction per feed, not per frame: many small frames stay linear.
            del buf[:pos]
