"""Shared fixtures: a real relay on 127.0.0.1 with real TLS and a real SQLite file (or a
real PostgreSQL server the tests start)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hushwire.client.service import HushwireClient
from hushwire.relay.config import RelayConfig
from hushwire.relay.server import RelayServer
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, settings_for
from tests.services import PostgresServer, RedisServer, postgres_bindir, redis_binary
from tests.support import DEMO_USERS, Daemon, Harness, add_users


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hushwire")
    group.addoption(
        "--slow", action="store_true", help="soak sizes: 50,000 messages in the crash-storm test"
    )
    group.addoption(
        "--fuzz-seconds",
        type=float,
        default=10.0,
        help="how long the wire fuzzer runs (default 10)",
    )
    group.addoption(
        "--connections",
        type=int,
        default=2000,
        help="idle authenticated connections to hold (default 2000)",
    )


RelayFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
def relay_store() -> str | None:
    """The PostgreSQL URL relays of `relay_factory` keep their state in, or None for
    their SQLite db. Modules that run on both backends override it with a param."""
    return None


@pytest.fixture
async def relay_factory(tmp_path: Path, relay_store: str | None) -> AsyncIterator[RelayFactory]:
    harnesses: list[Harness] = []

    async def start(
        users: tuple[str, ...] = DEMO_USERS,
        db: Path | None = None,
        tokens: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Harness:
        # A db given by the test is a store of its own: that SQLite file.
        store = relay_store if db is None else None
        db = db or tmp_path / "relay.db"
        base = RelayConfig(db=db, port=0, store=store)
        if tokens is None:
            tokens = await add_users(base.store_target, users)
        config = dataclasses.replace(base, **overrides).validate()
        server = RelayServer(config)
        await server.start()
        harness = Harness(server, config, tokens)
        harnesses.append(harness)
        return harness

    yield start
    for h in harnesses:
        await h.close()


@pytest.fixture
async def relay(relay_factory: RelayFactory) -> Harness:
    return await relay_factory()


@pytest.fixture
async def daemons():
    started: list[Daemon] = []

    async def start(db, *extra, **popen):
        d = await Daemon(db, *extra, **popen).start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.returncode is None:
            d.proc.kill()
            await d.proc.wait()


Login = Callable[..., Awaitable[HushwireClient]]


@pytest.fixture
async def login(tmp_path: Path) -> AsyncIterator[Login]:
    """login(relay, user, profile=None) -> a started client with its own profile."""
    clients: list[HushwireClient] = []

    async def make(
        relay: Harness, user: str, profile: Path | None = None, **kwargs
    ) -> HushwireClient:
        client = await HushwireClient.login(
            profile or tmp_path / f"profile-{user}",
            PASSPHRASE,
            settings_for(relay, user),
            kdf=FAST_KDF,
            backoff=FAST_BACKOFF,
            **kwargs,
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


T = TypeVar("T")


def _installed(found: T | None, what: str, package: str, tests: str) -> T:
    """`found`, or fail under CI (which must run these tests) and skip, loudly, elsewhere."""
    if found is None:
        reason = f"{what} not installed (apt-get install {package}): NOT TESTED"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the {tests} tests (.ci/run installs it)")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (skipped, loudly, only if not installed)."""
    bindir = _installed(postgres_bindir(), "PostgreSQL server", "postgresql", "PostgreSQL")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for one test (tests restart it), stopped at the end."""
    binary = _installed(redis_binary(), "redis-server", "redis-server", "cluster")
    server = RedisServer(binary).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store lives, once per backend: a SQLite file, or a PostgreSQL URL."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return tmp_path / "users.db"
