"""Where a store lives: a SQLite file path, or a postgresql:// URL (no driver import)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from hushwire.relay.errors import StoreError

URL_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(target: str | Path) -> bool:
    """True if `target` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and urlsplit(target).scheme in URL_SCHEMES


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def postgres_module() -> ModuleType:
    """relay/store/postgres.py, imported on first use: asyncpg is an optional extra that
    SQLite relays never need."""
    try:
        from hushwire.relay.store import postgres
    except ImportError as exc:
        raise StoreError(
            f"a PostgreSQL store needs asyncpg ({exc}): pip install 'hushwire[postgresql]'"
        ) from exc
    return postgres
