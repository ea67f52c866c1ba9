"""End-to-end fixtures: `login` starts clients with their own profiles in tmp dirs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from client.service import HushwireClient
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, settings_for
from tests.support import Harness

Login = Callable[..., Awaitable[HushwireClient]]


@pytest.fixture
async def login(tmp_path: Path) -> AsyncIterator[Login]:
    """login(relay, user, profile=None) -> a started client with its own profile."""
    clients: list[HushwireClient] = []

    async def make(relay: Harness, user: str, profile: Path | None = None,
                   **kwargs) -> HushwireClient:
        client = await HushwireClient.login(
            profile or tmp_path / f"profile-{user}", PASSPHRASE, settings_for(relay, user),
            kdf=FAST_KDF, backoff=FAST_BACKOFF, **kwargs,
        )
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def reopen(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[HushwireClient]]]:
    """reopen(user) -> open an existing profile again (not started)."""
    clients: list[HushwireClient] = []

    async def make(user: str, profile: Path | None = None, **kwargs) -> HushwireClient:
        client = await HushwireClient.open(
            profile or tmp_path / f"profile-{user}", PASSPHRASE, backoff=FAST_BACKOFF, **kwargs
        )
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()
