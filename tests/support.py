"""Helpers shared by the test tree (imported by conftest.py and by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from client.connection import RelayConnection, TlsSettings
from relay.config import RelayConfig
from relay.server import RelayServer
from relay.store import Store
from relay.tokens import hash_token, new_salt, new_token

DEMO_USERS = ("alice", "bob", "carol")


async def add_users(db: Path, names: tuple[str, ...]) -> dict[str, str]:
    tokens = {}
    async with await Store.open(db) as store:
        for name in names:
            token, salt = new_token(), new_salt()
            await store.add_user(name, hash_token(token, salt), salt, now=0)
            tokens[name] = token
    return tokens


@dataclass
class Harness:
    server: RelayServer
    config: RelayConfig
    tokens: dict[str, str]
    conns: list[RelayConnection] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls(self) -> TlsSettings:
        return TlsSettings(pin=self.server.fingerprint)

    async def connect(self) -> RelayConnection:
        conn = await RelayConnection.connect("127.0.0.1", self.port, self.tls)
        self.conns.append(conn)
        return conn

    async def login(self, user: str) -> RelayConnection:
        conn = await self.connect()
        await conn.handshake(user, self.tokens[user])
        return conn

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        await self.server.close()
