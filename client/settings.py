"""Where and as whom a profile connects, and how it backs off between attempts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hushwire.client.connection import TlsSettings
from hushwire.client.errors import ProfileCorrupt


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where and as whom to connect, as stored in the profile (sealed)."""

    host: str
    port: int
    user: str
    token: str
    pin: str | None = None  # SHA-256 fingerprint pinned on first use
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    device: int = 1  # which device of the account this profile is (1 before devices)

    def __repr__(self) -> str:  # never let the token reach a log line
        return f"RelaySettings(host={self.host!r}, port={self.port}, user={self.user!r})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tls(self) -> TlsSettings:
        return TlsSettings(
            pin=None if self.ca_file else self.pin,
            ca_file=Path(self.ca_file) if self.ca_file else None,
            client_cert=Path(self.client_cert) if self.client_cert else None,
            client_key=Path(self.client_key) if self.client_key else None,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "user": self.user, "token": self.token,
            "pin": self.pin, "ca_file": self.ca_file, "client_cert": self.client_cert,
            "client_key": self.client_key, "device": self.device,
        }  # fmt: skip

    @classmethod
    def from_record(cls, record: Any) -> RelaySettings:
        try:
            return cls(**record)
        except TypeError:
            raise ProfileCorrupt("stored relay settings are malformed") from None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential, capped, with jitter so clients do not stampede."""

    initial: float = 0.5
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before reconnect `attempt` (0-based): uniform in [cap/2, cap]."""
        cap = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        jitter = secrets.randbelow(1_000_001) / 1_000_000
        return max(cap / 2 + jitter * cap / 2, retry_after or 0.0)
