"""The Python floor: a minimal TLS forwarder on uvloop, asyncio Protocols.

No auth, no storage, no msgpack. Framing (all integers big-endian uint32):

    client -> floor   first frame: [len=4][own id]; the floor answers [len=4][0xFFFFFFFF]
    client -> floor   [len][dest id][payload]     forwarded as-is to connection `dest id`

With --acks the floor has MQTT QoS 1's four frames per message (still no storage):

    floor -> sender     [len=12][0xFFFFFFFE][the payload's first 8 bytes]   (PUBACK)
    recipient -> floor  [len][0xFFFFFFFE][8 bytes per delivery acked]     (consumed)

Frames for one destination are coalesced per read (PERF-NOTES: the main lever with TLS).
Run: python -m bench.floor --cert C --key K [--acks]  (prints `listening on 127.0.0.1:PORT`).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import struct
import sys

HEADER = struct.Struct(">II")
READY = struct.pack(">II", 4, 0xFFFFFFFF)
ACK = 0xFFFFFFFE
ACK_HEADER = struct.pack(">II", 12, ACK)
MAX_FRAME = 1 << 20


class Floor(asyncio.Protocol):
    __slots__ = ("acks", "buf", "conns", "dirty", "ident", "out", "transport")

    def __init__(self, conns: dict[int, Floor], dirty: list[Floor], acks: bool) -> None:
        self.conns = conns
        self.dirty = dirty
        self.acks = acks
        self.buf = b""
        self.out: list[bytes] = []
        self.ident: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ident is not None and self.conns.get(self.ident) is self:
            del self.conns[self.ident]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        conns, dirty = self.conns, self.dirty
        while n - pos >= 8:
            length, dest = HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME or length < 4:
                self.transport.abort()  # type: ignore[union-attr]
                return
            end = pos + 4 + length
            if end > n:
                break
            if self.ident is None:
                self.ident = dest
                conns[dest] = self
                self.out.append(READY)
                if not self.out[1:]:
                    dirty.append(self)
            elif dest != ACK:
                peer = conns.get(dest)
                if peer is not None:
                    if not peer.out:
                        dirty.append(peer)
                    peer.out.append(buf[pos:end])
                if self.acks:
                    if not self.out:
                        dirty.append(self)
                    self.out.append(ACK_HEADER + buf[pos + 8 : pos + 16])
            pos = end
        self.buf = buf[pos:]
        for peer in dirty:
            if peer.transport is not None and not peer.transport.is_closing():
                peer.transport.write(b"".join(peer.out))
            peer.out.clear()
        dirty.clear()


async def serve(args: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    conns: dict[int, Floor] = {}
    dirty: list[Floor] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Floor(conns, dirty, args.acks), "127.0.0.1", args.port, ssl=ctx, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()  # until killed by the driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--acks", action="store_true", help="QoS 1's acks (see above)")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
