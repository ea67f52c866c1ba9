"""Where and as whom a profile connects (one relay address or several of one deployment),
and how it backs off between attempts."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hushwire.client.connection import TlsSettings
from hushwire.client.errors import ClientError, ProfileCorrupt

Address = tuple[str, int]
MAX_RELAYS = 16  # addresses of one deployment a profile keeps
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")  # a DNS name or an IPv4 address
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}(%[A-Za-z0-9_.-]+)?")  # inside [brackets]


def parse_relays(value: str) -> tuple[Address, ...]:
    """`HOST:PORT[,HOST:PORT...]` (an IPv6 host in [brackets]) as addresses, in order.

    ClientError names the first bad entry: an empty one, a missing or out-of-range
    port, a duplicate, or more than MAX_RELAYS."""
    addresses: list[Address] = []
    for raw in value.split(","):
        item = raw.strip()
        host, sep, port = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            good_host = _IPV6.fullmatch(host) is not None
        else:
            good_host = _HOSTNAME.fullmatch(host) is not None
        if not sep or not good_host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClientError(
                f"expected HOST:PORT[,HOST:PORT...] (an IPv6 address in [brackets]), "
                f"got {item!r} in {value!r}"
            )
        if (host, int(port)) in addresses:
            raise ClientError(f"{item} is listed twice in {value!r}")
        addresses.append((host, int(port)))
    if len(addresses) > MAX_RELAYS:
        raise ClientError(f"at most {MAX_RELAYS} relay addresses, got {len(addresses)}")
    return tuple(addresses)


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    # More relays of the same deployment (one certificate or one CA), tried after
    # host:port in this order when it cannot be reached (docs/security.md, "Failover").
    alternates: tuple[Address, ...] = ()

    def __repr__(self) -> str:  # never let the token reach a log line
        return f"RelaySettings(host={self.host!r}, port={self.port}, user={self.user!r})"

    @property
    def address(self) -> str:
        return format_address((self.host, self.port))

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every relay of the profile, in the order given at login."""
        return ((self.host, self.port), *self.alternates)

    @property
    def relays(self) -> str:
        """The addresses as `login --relay` takes them."""
        return ",".join(format_address(a) for a in self.addresses)

    def tls(self) -> TlsSettings:
        return TlsSettings(
            pin=None if self.ca_file else self.pin,
            ca_file=Path(self.ca_file) if self.ca_file else None,
            client_cert=Path(self.client_cert) if self.client_cert else None,
            client_key=Path(self.client_key) if self.client_key else None,
        )

    def to_record(self) -> dict[str, Any]:
        record = {
            "host": self.host, "port": self.port, "user": self.user, "token": self.token,
            "pin": self.pin, "ca_file": self.ca_file, "client_cert": self.client_cert,
            "client_key": self.client_key, "device": self.device,
        }  # fmt: skip
        if self.alternates:  # only then: an older hushwire still opens a one-relay profile
            record["alternates"] = [list(a) for a in self.alternates]
        return record

    @classmethod
    def from_record(cls, record: Any) -> RelaySettings:
        try:
            alternates = tuple((str(h), int(p)) for h, p in record.get("alternates", ()))
            return cls(**{**record, "alternates": alternates})
        except (TypeError, ValueError, AttributeError):
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
