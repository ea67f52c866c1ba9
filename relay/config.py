"""Relay settings: one frozen object, from defaults < TOML file < command-line flags.

Every setting is declared once below, with its help text; the argument parser and the
TOML loader are both generated from that list, so `--help` cannot drift from the file
format.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hushwire.common.crypto.devices import MAX_DEVICES
from hushwire.common.errors import HushwireError
from hushwire.common.frames import DEFAULT_MAX_FRAME
from hushwire.common.version import version
from hushwire.relay.control import control_path
from hushwire.relay.logs import LOG_FORMATS
from hushwire.relay.proxy_protocol import Network, parse_networks
from hushwire.relay.ratelimit import Rate
from hushwire.relay.store.quota import QuotaLimits
from hushwire.relay.store.urls import is_postgres_url


class ConfigError(HushwireError):
    """The configuration file or a flag has an invalid value."""


def _opt(default: Any, help: str, *, metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass(frozen=True, slots=True)
class RelayConfig:
    db: Path = _opt(Path("users.db"), "SQLite database (created and migrated if absent)")
    store: str | None = _opt(
        None,
        "keep the relay's state in PostgreSQL instead of the SQLite db: a postgresql:// URL "
        "(schema created or upgraded at start; needs the `postgresql` extra)",
        metavar="URL",
    )
    control_socket: Path | None = _opt(
        None,
        "the local socket hushwire-admin asks for stats and purge (default: DB.control beside "
        "the db; set one per relay when relays share a PostgreSQL store)",
        metavar="PATH",
    )
    bus: str | None = _opt(
        None,
        "a redis:// URL: the bus between several relays sharing one PostgreSQL store "
        "(wake-ups, pushes, kicks, shared rate limits); needs `store` and the `cluster` extra",
        metavar="URL",
    )
    host: str = _opt("127.0.0.1", "address to listen on")
    proxy_protocol: str | None = _opt(
        None,
        "addresses or networks (comma-separated, CIDR) of load balancers that open each "
        "connection with a PROXY protocol v2 header naming the client (HAProxy "
        "send-proxy-v2); connections from there must carry it, others are served directly",
        metavar="ADDRS",
    )
    port: int = _opt(7443, "TCP port to listen on (0 picks a free one)")
    cert: Path | None = _opt(
        None,
        "TLS certificate (default: relay-cert.pem beside the db, "
        "created self-signed on first start)",
    )
    key: Path | None = _opt(None, "TLS private key (default: relay-key.pem beside the db)")
    client_ca: Path | None = _opt(None, "require client certificates signed by this CA file")
    dh_params: Path | None = _opt(
        None,
        "PEM DH parameters (hushwire-admin dhparams) to make "
        "clients use that finite-field group instead of X25519",
    )
    dh_group: str = _opt(
        "x25519", "built-in DH group: x25519 or ffdhe3072 (ignored with dh_params)"
    )
    min_protocol: int = _opt(
        1,
        "oldest protocol version served: 1 keeps serving version-1 (X3DH) clients, 2 turns "
        "them away with unsupported_version",
    )
    max_frame: int = _opt(DEFAULT_MAX_FRAME, "largest frame accepted, in bytes")
    max_mailbox: int = _opt(10_000, "envelopes queued per recipient before sends are refused")
    max_mailbox_bytes: int = _opt(256 * 1024 * 1024, "bytes queued per recipient")
    max_per_sender: int = _opt(
        2_000, "envelopes one sender may have queued for one recipient (its share)"
    )
    max_per_sender_bytes: int = _opt(
        32 * 1024 * 1024, "bytes one sender may have queued for one recipient"
    )
    min_free_disk: int = _opt(
        256 * 1024 * 1024,
        "free bytes on the db's file system below which sends are refused (0: no check)",
    )
    retention_days: float = _opt(30.0, "undelivered envelopes older than this are purged")
    idle_timeout: float = _opt(
        120.0, "seconds without a frame before a client is dropped (clients ping at half this)"
    )
    handshake_timeout: float = _opt(10.0, "seconds allowed for TLS + hello + login")
    send_rate: float = _opt(60.0, "envelopes per second per sender (sustained)")
    send_burst: float = _opt(120.0, "envelopes a sender may send at once")
    login_failures: float = _opt(
        5.0, "failed logins allowed at once per user and address prefix (/24 IPv4, /64 IPv6)"
    )
    login_failure_period: float = _opt(60.0, "seconds for one more failed login to be allowed")
    fetch_burst: float = _opt(20.0, "prekey bundles a user may fetch at once")
    fetch_period: float = _opt(3.0, "seconds for one more bundle fetch to be allowed")
    target_fetch_burst: float = _opt(
        10.0, "bundles with a one-time prekey served for one user at once (by all fetchers)"
    )
    target_fetch_period: float = _opt(
        60.0,
        "seconds for one more such bundle; past this limit fetches get the last-resort "
        "bundle (signed prekey only)",
    )
    publish_burst: float = _opt(10.0, "key uploads a user may make at once")
    publish_period: float = _opt(60.0, "seconds for one more key upload to be allowed")
    ack_rate: float = _opt(10_000.0, "envelope ids a user may ack per second (sustained)")
    ack_burst: float = _opt(20_000.0, "envelope ids a user may ack at once")
    request_rate: float = _opt(
        5.0, "who, prekey_count and ping requests per second per user, each (sustained)"
    )
    request_burst: float = _opt(60.0, "who, prekey_count and ping requests at once, each")
    delivery_window: int = _opt(256, "envelopes pushed to a client and not yet acked")
    max_connections: int = _opt(
        20_000,
        "concurrent connections, counted from accept (TLS handshakes included); kept below "
        "the descriptor limit, which the relay raises to its hard value",
    )
    max_pending_per_address: int = _opt(
        128, "TLS handshakes in progress at once from one address prefix (/24 IPv4, /64 IPv6)"
    )
    max_devices: int = _opt(5, "devices per account (at most 16, the device list's ceiling)")
    link_ttl: float = _opt(300.0, "seconds a link code stays valid")
    synchronous: str = _opt(
        "NORMAL",
        "SQLite synchronous mode: NORMAL survives any crash of the process, FULL also a power loss",
    )
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _opt(
        "text", "text, or json: one JSON object per line (time, level, logger, message, fields)"
    )
    metrics_listen: str | None = _opt(
        None,
        "serve Prometheus metrics at http://HOST:PORT/metrics (off by default; "
        "needs the `metrics` extra: pip install 'hushwire[metrics]')",
        metavar="HOST:PORT",
    )

    @property
    def send_limit(self) -> Rate:
        return Rate(self.send_burst, self.send_rate)

    @property
    def login_limit(self) -> Rate:
        return Rate(self.login_failures, 1.0 / self.login_failure_period)

    @property
    def quota(self) -> QuotaLimits:
        return QuotaLimits(
            envelopes=self.max_mailbox,
            bytes=self.max_mailbox_bytes,
            sender_envelopes=self.max_per_sender,
            sender_bytes=self.max_per_sender_bytes,
        )

    @property
    def ack_limit(self) -> Rate:
        return Rate(self.ack_burst, self.ack_rate)

    @property
    def request_limit(self) -> Rate:
        return Rate(self.request_burst, self.request_rate)

    @property
    def fetch_limit(self) -> Rate:
        return Rate(self.fetch_burst, 1.0 / self.fetch_period)

    @property
    def target_fetch_limit(self) -> Rate:
        return Rate(self.target_fetch_burst, 1.0 / self.target_fetch_period)

    @property
    def publish_limit(self) -> Rate:
        return Rate(self.publish_burst, 1.0 / self.publish_period)

    @property
    def store_target(self) -> Path | str:
        """Where the relay's state lives: the PostgreSQL URL if set, else the SQLite db."""
        return self.store or self.db

    @property
    def proxies(self) -> tuple[Network, ...]:
        return () if self.proxy_protocol is None else parse_networks(self.proxy_protocol)

    @property
    def control_path(self) -> Path:
        return self.control_socket or control_path(self.db)

    @property
    def cert_path(self) -> Path:
        return self.cert or self.db.parent / "relay-cert.pem"

    @property
    def key_path(self) -> Path:
        return self.key or self.db.parent / "relay-key.pem"

    def validate(self) -> RelayConfig:
        positive = (
            "max_frame max_mailbox max_mailbox_bytes max_per_sender max_per_sender_bytes "
            "retention_days idle_timeout handshake_timeout send_rate "
            "send_burst login_failures login_failure_period fetch_burst fetch_period "
            "publish_burst publish_period delivery_window max_connections "
            "max_pending_per_address ack_rate ack_burst request_rate request_burst "
            "target_fetch_burst target_fetch_period max_devices link_ttl"
        ).split()
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.min_free_disk < 0:
            raise ConfigError("min_free_disk must be 0 or more")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be between 0 and 65535")
        if self.store is not None and not is_postgres_url(self.store):
            raise ConfigError("store must be a postgresql:// URL (a SQLite file is set by db)")
        if self.bus is not None:
            if self.store is None:
                raise ConfigError(
                    "bus needs a PostgreSQL store (--store postgresql://...): relays share "
                    "state through the database, and a SQLite file has one relay"
                )
            if not self.bus.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError("bus must be a redis:// (or rediss://, unix://) URL")
        if self.synchronous.upper() not in ("NORMAL", "FULL"):
            raise ConfigError("synchronous must be NORMAL or FULL")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError("log_format must be text or json")
        if self.metrics_listen is not None:
            host_port(self.metrics_listen)
        if self.proxy_protocol is not None:
            try:
                parse_networks(self.proxy_protocol)
            except ValueError as exc:
                raise ConfigError(f"proxy_protocol: {exc}") from None
        if self.min_protocol not in (1, 2):
            raise ConfigError("min_protocol must be 1 or 2")
        if self.max_frame < 1024:
            raise ConfigError("max_frame must be at least 1024 bytes")
        if self.max_devices > MAX_DEVICES:
            raise ConfigError(f"max_devices must be at most {MAX_DEVICES}")
        return self


def host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` as (host, port); an IPv6 host goes in brackets: `[::1]:9464`."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected HOST:PORT, not {value!r}")
    return host, int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(RelayConfig)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if "Path" in kind:
            return None if value is None else Path(str(value))
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except ValueError:
        raise ConfigError(f"{name}: expected {kind}, got {value!r}") from None


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file; unknown keys are errors so typos are never silently ignored."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    section = data.get("relay", data)
    unknown = sorted(set(section) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config {path}: unknown setting(s) {', '.join(unknown)}")
    base = path.parent
    out = {}
    for name, value in section.items():
        coerced = _coerce(name, value)
        if isinstance(coerced, Path) and not coerced.is_absolute():
            coerced = base / coerced  # paths in a file are relative to the file
        out[name] = coerced
    return out


def build_parser() -> argparse.ArgumentParser:
    settings = "\n".join(
        f"  {name:<22} {f.metadata['help']} (default: {f.default})" for name, f in _FIELDS.items()
    )
    parser = argparse.ArgumentParser(
        prog="hushwire-relay",
        description="Relay for end-to-end encrypted hushwire chat. It stores users and their "
        "public prekeys in SQLite (or PostgreSQL) and forwards sealed envelopes it cannot read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every flag can also be set in the TOML file given by --config, by its name "
        "with underscores, at top level or under [relay]; flags win over the file.\n"
        "Relative paths in the file are relative to the file.\n\nSettings:\n"
        + settings
        + "\n\nOn SIGTERM or SIGINT the relay stops accepting, finishes in-flight commits "
        "and exits 0.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    for name, f in _FIELDS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=f.metadata["metavar"] or name.upper(),
            help=f.metadata["help"],
        )
    return parser


def from_args(argv: list[str] | None = None) -> RelayConfig:
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for name in _FIELDS:
        flag = getattr(args, name)
        if flag is not None:
            values[name] = _coerce(name, flag)
    return RelayConfig(**values).validate()
