"""Capture everything a conversation puts on the wire and everything the relay sees.

A loopback proxy records the TLS bytes both ways (what a network observer gets); a hook
records every request the relay decodes (what the relay operator gets). Neither, nor
the relay's database files, may contain a message text or a private key; the token may
appear only where it must (inside TLS, in the relay's view of `login`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import msgpack

from hushwire.client.service import HushwireClient, MessageReceived, RelaySettings
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, next_event


class CapturingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.captured = bytearray()
        self.server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _on_client(self, creader, cwriter) -> None:
        rreader, rwriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        pipes = [
            asyncio.create_task(self._pipe(creader, rwriter)),
            asyncio.create_task(self._pipe(rreader, cwriter)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for p in pipes:
            p.cancel()
        cwriter.close()
        rwriter.close()

    async def _pipe(self, reader, writer) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                self.captured += data
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        self.server.close()
        for p in self._pipes:
            p.cancel()


async def test_no_plaintext_token_or_private_key_on_the_wire_or_at_the_relay(
    relay, tmp_path, figures
):
    proxy = CapturingProxy(relay.port)
    port = await proxy.start()
    relay_view: list[bytes] = []
    hub = relay.server.relay
    real_handle, real_send, real_ack = hub.handle, hub.send_nowait, hub.ack_nowait

    async def recording_handle(peer, request, now):
        relay_view.append(msgpack.packb(request.to_wire()))
        return await real_handle(peer, request, now)

    # Sends (send_devices too, below) and acks usually take task-free paths, not `handle`.
    def recording_send(peer, request, now, answer):
        relay_view.append(msgpack.packb(request.to_wire()))
        return real_send(peer, request, now, answer)

    def recording_ack(peer, request, answer):
        relay_view.append(msgpack.packb(request.to_wire()))
        return real_ack(peer, request, answer)

    hub.handle, hub.send_nowait, hub.ack_nowait = recording_handle, recording_send, recording_ack
    real_fan_out = hub.sends.send_devices_nowait

    def recording_fan_out(peer, request, now, answer):
        relay_view.append(msgpack.packb(request.to_wire()))
        return real_fan_out(peer, request, now, answer)

    hub.sends.send_devices_nowait = recording_fan_out
    clients = {}
    for user in ("alice", "bob"):
        settings = RelaySettings(
            "127.0.0.1", port, user, relay.tokens[user], pin=relay.server.fingerprint
        )
        clients[user] = await HushwireClient.login(
            tmp_path / f"p-{user}", PASSPHRASE, settings, kdf=FAST_KDF, backoff=FAST_BACKOFF
        )
    alice, bob = clients["alice"], clients["bob"]
    texts = [f"MARKER-{secrets.token_hex(8)}-{i}" for i in range(10)]
    for i, text in enumerate(texts):
        sender, receiver = (alice, bob) if i % 2 == 0 else (bob, alice)
        await sender.send(receiver.user, text)
        assert (await next_event(receiver, MessageReceived)).text == text
    for c in clients.values():
        await c.sync()

    secrets_to_find = {}
    for user, client in clients.items():
        ident = IdentityKeyPair.from_bytes(await client.store.load_identity(), X25519)
        secrets_to_find[f"{user} identity signing seed"] = ident.sign_seed
        secrets_to_find[f"{user} identity DH private key"] = ident.dh.private
    wire = bytes(proxy.captured)
    view = b"".join(relay_view)
    db_files = b"".join(  # the db, its WAL and SHM (not the relay's control socket)
        p.read_bytes()
        for p in relay.config.db.parent.glob(relay.config.db.name + "*")
        if p.is_file()
    )
    for text in texts:
        for where, blob in (("wire", wire), ("relay view", view), ("relay db", db_files)):
            assert text.encode() not in blob, f"plaintext in {where}"
    for what, secret in secrets_to_find.items():
        for where, blob in (("wire", wire), ("relay view", view), ("relay db", db_files)):
            assert secret not in blob, f"{what} in {where}"
    for user in clients:
        assert relay.tokens[user].encode() not in wire, "token visible on the wire"
    assert len(wire) > 10_000 and len(relay_view) > 20  # the capture saw the conversation
    figures.add(
        f"10-message conversation through a capturing proxy ({len(wire)} bytes on the wire, "
        f"{len(relay_view)} requests seen by the relay), plus the relay's db files",
        "message texts found 0 times; identity private keys 0; tokens on the wire 0",
    )
    for c in clients.values():
        await c.close()
    await proxy.close()
