"""Build users.db.example: a fully migrated db with demo users and FIXED demo tokens.

    python -m relay.make_example_db [OUT]      (default: ./users.db.example)

The tokens below are public on purpose, so `./dev.sh relay` works out of the box and
the README can show a login. Never use this db, or these tokens, for real users:
`hushwire-admin reset-token NAME` (or a fresh `add-user`) replaces them.

The salts and timestamps are fixed too, so rebuilding gives the same rows. The file is
left in rollback-journal mode and vacuumed, so it is one self-contained file with no
-wal/-shm companions; the relay switches a copy of it to WAL when it first opens it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from hushwire.relay.store import Store
from hushwire.relay.tokens import hash_token

DEFAULT_OUT = "users.db.example"
CREATED_AT = 1_767_225_600  # 2026-01-01 00:00 UTC

# Demo credentials: public, for local trials only.
DEMO_TOKENS: dict[str, str] = {
    "alice": "hw_demo_alice_PUBLIC-DEMO-TOKEN-do-not-use-for-real-users",
    "bob": "hw_demo_bob_PUBLIC-DEMO-TOKEN-do-not-use-for-real-users",
    "carol": "hw_demo_carol_PUBLIC-DEMO-TOKEN-do-not-use-for-real-users",
}


def demo_salt(name: str) -> bytes:
    """Fixed per-user salt, so the example db is reproducible byte for byte in its rows."""
    return hashlib.sha256(b"hushwire demo salt:" + name.encode()).digest()[:16]


async def _fill(path: Path) -> None:
    store = await Store.open(path)
    try:
        for name, token in DEMO_TOKENS.items():
            salt = demo_salt(name)
            await store.add_user(name, hash_token(token, salt), salt, now=CREATED_AT)
    finally:
        await store.close()


def build(out: str | Path) -> Path:
    """Build the example db in a temp file and rename it over `out`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    asyncio.run(_fill(tmp))
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("VACUUM")
    finally:
        conn.close()
    os.replace(tmp, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = build(args[0] if args else DEFAULT_OUT)
    print(f"wrote {out} with demo users {', '.join(DEMO_TOKENS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
