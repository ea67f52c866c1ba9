"""End-to-end helpers: real profiles in tmp dirs talking through a real relay."""

from __future__ import annotations

import asyncio

from hushwire.client.service import (
    Backoff,
    ClientEvent,
    HushwireClient,
    RelaySettings,
)
from hushwire.client.store import KdfParams
from tests.support import Harness

WAIT = 15.0  # generous: tests wait on events; this only bounds a failure
PASSPHRASE = "correct horse battery staple"
FAST_KDF = KdfParams(n=2**10)  # the CLI tests use the real default
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.5)


def settings_for(relay: Harness, user: str) -> RelaySettings:
    return RelaySettings(host="127.0.0.1", port=relay.port, user=user, token=relay.tokens[user])


async def next_event(client: HushwireClient, kind: type, pred=None) -> ClientEvent:
    """The next event of `kind` (matching `pred`), skipping others."""
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.events.get()
            if isinstance(event, kind) and (pred is None or pred(event)):
                return event


def drain(client: HushwireClient) -> list[ClientEvent]:
    """The events queued right now, without waiting."""
    events = []
    while not client.events.empty():
        events.append(client.events.get_nowait())
    return events


async def link(
    relay, old: HushwireClient, profile, name: str, *, port: int | None = None
) -> HushwireClient:
    """A new profile becomes a device of `old`'s account (`hushwire login --link`),
    reaching the relay at `port` (default: the relay's own)."""
    offer, _ = await old.offer_link()
    joining = asyncio.create_task(
        HushwireClient.login_link(
            profile,
            PASSPHRASE,
            host="127.0.0.1",
            port=port or relay.port,
            code=offer.code.text(),
            name=name,
            fingerprint=relay.server.fingerprint,
            kdf=FAST_KDF,
            backoff=FAST_BACKOFF,
        )
    )
    await old.accept_link(offer)
    return await asyncio.wait_for(joining, 15)


async def texts(client: HushwireClient, contact: str) -> list[tuple[str, str]]:
    """(direction, text) of the conversation with `contact` as this device shows it."""
    return [(h.direction, h.text) for h in await client.history(contact, 500)]


async def sync(*clients: HushwireClient) -> None:
    for c in clients:
        await c.sync()
