"""Load-generator connections: hushwire, raw MQTT 3.1.1 and the floor, equally lean.

All three are uvloop asyncio Protocols that build each outgoing message with one
concatenation or one msgpack call (no crypto: the relay never opens envelopes), parse
incoming bytes in a loop over one buffer, and write at most once per event-loop tick per
connection. Every payload starts with an 8-byte sequence number, so the generator can
match deliveries to sends for windows and latency.

A message is complete when every event it needs happened: the sender's ack from the
server (hushwire `ok`, MQTT PUBACK; none for QoS 0 and the floor) and the delivery to
the recipient. A sender keeps at most `window` incomplete messages.
"""

from __future__ import annotations

import asyncio
import struct
import time
from abc import ABC, abstractmethod
from typing import Any

import msgpack

U32 = struct.Struct(">I")
FLOOR_HEADER = struct.Struct(">II")
FLOOR_ACK = 0xFFFFFFFE
ACK_ID_BASE = 1 << 48  # request ids of acks; send ids are sequence numbers below this
PAD = bytes(range(256)) * 64


class Stats:
    """Shared by every connection of one measurement."""

    def __init__(self, events: int) -> None:
        self.events = events  # events that complete a message (see module docstring)
        self.need: dict[int, list[Any]] = {}
        self.t0: dict[int, float] = {}  # seq -> send (or intended send) time
        self.seq = 0
        self.running = True
        self.measuring = False
        self.delivered = 0  # deliveries while measuring
        self.delivered_total = 0
        self.acked = 0  # server acks (ok / PUBACK) while measuring
        self.errors = 0
        self.lat: list[float] = []
        self.drained = asyncio.Event()
        self.drain_target = 0  # drain mode: count every delivery, set `drained` at this

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def event(self, seq: int) -> None:
        entry = self.need.get(seq)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self.need[seq]
            sender = entry[1]
            sender.inflight -= 1
            sender.refill()

    def server_ack(self, seq: int) -> None:
        if self.measuring:
            self.acked += 1
        self.event(seq)

    def deliver(self, seq: int) -> None:
        if self.drain_target:
            self.delivered_total += 1
            if self.delivered_total >= self.drain_target:
                self.drained.set()
            return
        t0 = self.t0.pop(seq, None)
        if t0 is None:
            return  # left over from an earlier measurement (redelivered after login)
        self.delivered_total += 1
        if self.measuring:
            self.delivered += 1
            self.lat.append(time.perf_counter() - t0)
        self.event(seq)

    def fail(self, seq: int) -> None:
        self.errors += 1
        entry = self.need.pop(seq, None)
        if entry is not None:
            entry[1].inflight -= 1


class Client(asyncio.Protocol, ABC):
    """Buffered writes (one per tick), a closed-loop sender, subclass parses and frames."""

    def __init__(self, stats: Stats, index: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.stats = stats
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.out: list[bytes] = []
        self.flush_pending = False
        self.inflight = 0
        self.window = 0
        self.dest = 0
        self.dests: list[int] = []  # if set, message seq goes to dests[seq % len]
        self.remaining = -1  # messages left to send; -1: unbounded
        self.size = 256
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.start()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    @abstractmethod
    def start(self) -> None:
        """Begin the protocol's handshake once TLS is up."""

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_pending = False
        t = self.transport
        if self.out and t is not None and not t.is_closing():
            t.write(b"".join(self.out))
        self.out.clear()

    @abstractmethod
    def send_msg(self, dest: int, seq: int, size: int) -> None:
        """Send one pre-built message of `size` bytes to client `dest`."""

    def refill(self) -> None:
        st = self.stats
        dests = self.dests
        while self.inflight < self.window and st.running and self.remaining:
            seq = st.next_seq()
            st.need[seq] = [st.events, self]
            st.t0[seq] = time.perf_counter()
            self.inflight += 1
            self.remaining -= 1
            self.send_msg(dests[seq % len(dests)] if dests else self.dest, seq, self.size)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def body_for(seq: int, size: int) -> bytes:
    return seq.to_bytes(8, "big") + PAD[: size - 8]


# --- hushwire --------------------------------------------------------------------------


class HushwireClient(Client):
    """hello + login, then pre-built `send` frames; acks every delivery (one ack per read).

    With `devices`, it speaks as real clients do (protocol version 2, docs/protocol.md
    "Devices"): every message is a `send_devices` with one envelope for the recipient's
    device 1, naming both accounts' list versions (0: none published), and acks carry a
    nil `id` (no reply) unless `quiet_acks` is False (what clients did before that, and
    all a relay from before it understands)."""

    def __init__(
        self,
        stats: Stats,
        index: int,
        user: str,
        token: str,
        names: list[str],
        *,
        devices: bool = False,
        quiet_acks: bool | None = None,
    ) -> None:
        super().__init__(stats, index)
        self.user = user
        self.token = token
        self.names = names
        self.devices = devices
        self.quiet_acks = devices if quiet_acks is None else quiet_acks
        self.ack_ids = ACK_ID_BASE

    @staticmethod
    def frame(obj: dict[str, Any]) -> bytes:
        payload = msgpack.packb(obj, use_bin_type=True)
        return U32.pack(len(payload)) + payload

    def start(self) -> None:
        versions = [2] if self.devices else [1]
        self.write(self.frame({"t": "hello", "id": 1, "versions": versions, "client": "bench"}))

    def send_msg(self, dest: int, seq: int, size: int) -> None:
        to, body = self.names[dest], body_for(seq, size)
        if self.devices:
            msg = {
                "t": "send_devices",
                "id": seq,
                "envelopes": [{"user": to, "device": 1, "body": body}],
                "lists": [{"user": self.user, "version": 0}, {"user": to, "version": 0}],
            }
        else:
            msg = {"t": "send", "id": seq, "to": [to], "body": body}
        self.write(self.frame(msg))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        st = self.stats
        mids: list[int] = []
        unpackb = msgpack.unpackb
        while n - pos >= 4:
            (length,) = U32.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > n:
                break
            msg = unpackb(buf[pos + 4 : end])
            pos = end
            t = msg["t"]
            if t == "deliver":
                mids.append(msg["mid"])
                st.deliver(int.from_bytes(msg["body"][:8], "big"))
            elif t == "ok":
                rid = msg["id"]
                if rid < ACK_ID_BASE:
                    if rid > 2 or self.ready.done():
                        st.server_ack(rid)
                    elif rid == 1:
                        self.write(
                            self.frame(
                                {"t": "login", "id": 2, "user": self.user, "token": self.token}
                            )
                        )
                    else:
                        self.ready.set_result(None)
            elif t == "error":
                rid = msg.get("id")
                if not self.ready.done():
                    self.ready.set_exception(RuntimeError(f"handshake: {msg}"))
                elif rid is not None and rid < ACK_ID_BASE:
                    st.fail(rid)
                else:
                    st.errors += 1
        self.buf = buf[pos:]
        if mids:
            if self.quiet_acks:  # as real clients ack since protocol version 2: no reply
                self.write(self.frame({"t": "ack", "id": None, "mids": mids}))
            else:
                self.ack_ids += 1
                self.write(self.frame({"t": "ack", "id": self.ack_ids, "mids": mids}))


# --- MQTT 3.1.1 ------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _mqtt_str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


class MqttClient(Client):
    """CONNECT (+ SUBSCRIBE to u/<index>), PUBLISH to u/<dest>; PUBACKs what it receives."""

    def __init__(
        self, stats: Stats, index: int, qos: int, *, clean: bool = True, subscribe: bool = True
    ) -> None:
        super().__init__(stats, index)
        self.qos = qos
        self.clean = clean
        self.subscribe = subscribe
        self.pid = 0
        self.pids: dict[int, int] = {}
        self.topics: dict[int, bytes] = {}

    def start(self) -> None:
        flags = 0x02 if self.clean else 0x00
        var = _mqtt_str(b"MQTT") + bytes([4, flags]) + (600).to_bytes(2, "big")
        body = var + _mqtt_str(f"c{self.index}".encode())
        self.write(b"\x10" + _varint(len(body)) + body)

    def send_msg(self, dest: int, seq: int, size: int) -> None:
        topic = self.topics.get(dest)
        if topic is None:
            topic = self.topics[dest] = _mqtt_str(f"u/{dest}".encode())
        payload = body_for(seq, size)
        if self.qos:
            self.pid = self.pid % 65535 + 1
            self.pids[self.pid] = seq
            rest = topic + self.pid.to_bytes(2, "big") + payload
            self.write(b"\x32" + _varint(len(rest)) + rest)
        else:
            rest = topic + payload
            self.write(b"\x30" + _varint(len(rest)) + rest)

    def disconnect(self) -> None:
        self.write(b"\xe0\x00")

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        st = self.stats
        acks: list[bytes] = []
        while n - pos >= 2:
            kind = buf[pos]
            # remaining length: 1-4 bytes
            mult, length, i = 1, 0, pos + 1
            while True:
                if i >= n:
                    self.buf = buf[pos:]
                    return self._ack(acks)
                b = buf[i]
                length += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            end = i + length
            if end > n:
                break
            ptype = kind >> 4
            if ptype == 3:  # PUBLISH
                tlen = int.from_bytes(buf[i : i + 2], "big")
                j = i + 2 + tlen
                if kind & 0x06:
                    acks.append(b"\x40\x02" + buf[j : j + 2])
                    j += 2
                st.deliver(int.from_bytes(buf[j : j + 8], "big"))
            elif ptype == 4:  # PUBACK
                seq = self.pids.pop(int.from_bytes(buf[i : i + 2], "big"), None)
                if seq is not None:
                    st.server_ack(seq)
            elif ptype == 2:  # CONNACK
                if buf[i + 1] != 0:
                    self.ready.set_exception(RuntimeError(f"CONNACK {buf[i + 1]}"))
                elif self.subscribe:
                    topic = _mqtt_str(f"u/{self.index}".encode())
                    rest = b"\x00\x01" + topic + bytes([self.qos])
                    self.write(b"\x82" + _varint(len(rest)) + rest)
                elif not self.ready.done():
                    self.ready.set_result(None)
            elif ptype == 9:  # SUBACK
                if not self.ready.done():
                    self.ready.set_result(None)
            pos = end
        self.buf = buf[pos:]
        self._ack(acks)

    def _ack(self, acks: list[bytes]) -> None:
        if acks:
            self.write(b"".join(acks))


# --- the floor -------------------------------------------------------------------------


class FloorClient(Client):
    """The floor's framing; with `acks`, QoS 1's four frames (see bench/floor.py)."""

    def __init__(self, stats: Stats, index: int, *, acks: bool = False) -> None:
        super().__init__(stats, index)
        self.acks = acks

    def start(self) -> None:
        self.write(FLOOR_HEADER.pack(4, self.index))

    def send_msg(self, dest: int, seq: int, size: int) -> None:
        self.write(FLOOR_HEADER.pack(4 + size, dest) + body_for(seq, size))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        st = self.stats
        acked: list[bytes] = []
        while n - pos >= 8:
            length, dest = FLOOR_HEADER.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > n:
                break
            if dest == 0xFFFFFFFF:
                self.ready.set_result(None)
            elif dest == FLOOR_ACK:
                st.server_ack(int.from_bytes(buf[pos + 8 : pos + 16], "big"))
            else:
                st.deliver(int.from_bytes(buf[pos + 8 : pos + 16], "big"))
                if self.acks:
                    acked.append(buf[pos + 8 : pos + 16])
            pos = end
        self.buf = buf[pos:]
        if acked:  # one ack frame per read, like the hushwire generator's
            self.write(FLOOR_HEADER.pack(4 + 8 * len(acked), FLOOR_ACK) + b"".join(acked))
