"""The relay daemon's lifecycle: open the store, listen with TLS, serve, shut down.

`RelayServer.close()` is idempotent (as in python-websockets): stop accepting, let each
connection finish the requests it took (a send waiting for its commit gets its `ok`),
then close the store, which flushes any pending group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hushwire.common.crypto.dh import group_by_name, load_pem, to_pem
from hushwire.common.errors import HushwireError, InvalidKey
from hushwire.relay import sdnotify
from hushwire.relay.accept import Acceptor
from hushwire.relay.admission import Admission, raise_descriptor_limit
from hushwire.relay.bus import Bus, open_bus
from hushwire.relay.config import ConfigError, RelayConfig, host_port
from hushwire.relay.connection import Connection, FlushQueue
from hushwire.relay.control import ControlServer
from hushwire.relay.dblock import DbLock
from hushwire.relay.errors import StoreError
from hushwire.relay.handlers import GroupInfo, Relay
from hushwire.relay.metrics import Snapshot
from hushwire.relay.store import Store
from hushwire.relay.store.urls import is_postgres_url
from hushwire.relay.tls import ensure_server_cert, fingerprint, server_context

if TYPE_CHECKING:
    from hushwire.relay.exporter import MetricsExporter

log = logging.getLogger("hushwire.relay")

ACCOUNT_POLL = 1.0  # seconds between checks for admin changes (disable, remove, reset)
CHECKPOINT_EVERY = 30.0  # WAL checkpoints run here, off the per-message path
PURGE_EVERY = 3600.0


def load_group(config: RelayConfig) -> GroupInfo:
    if config.dh_params is not None:
        try:
            text = config.dh_params.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read DH parameters {config.dh_params}: {exc}") from None
        try:
            group = load_pem(text)
        except HushwireError as exc:
            raise ConfigError(f"DH parameters {config.dh_params}: {exc.message}") from None
        return GroupInfo(group.name, group.public_size, to_pem(group))
    try:
        builtin = group_by_name(config.dh_group)
    except InvalidKey:
        raise ConfigError(f"unknown dh_group {config.dh_group!r}") from None
    return GroupInfo(builtin.name, builtin.public_size, None)


def check_paths(config: RelayConfig) -> None:
    """Before anything is created: every file the relay may create has a directory."""
    for what, path in (
        ("db", config.db),
        ("cert", config.cert_path),
        ("key", config.key_path),
        ("control_socket", config.control_path),
    ):
        if not path.parent.is_dir():
            raise ConfigError(f"the directory of {what} {path} ({path.parent}) does not exist")


def tls_context(config: RelayConfig) -> tuple[ssl.SSLContext, str]:
    """The server context and the certificate's SHA-256 fingerprint."""
    created = ensure_server_cert(config.cert_path, config.key_path, [config.host])
    if created:
        log.info("created a self-signed certificate at %s", config.cert_path)
    return server_context(config.cert_path, config.key_path, config.client_ca), fingerprint(
        config.cert_path
    )


class RelayServer:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.connections: set[Connection] = set()
        self.fingerprint = ""
        self.port = config.port
        self._server: Acceptor | None = None
        self._store: Store | None = None
        self._relay: Relay | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._all_finished = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._exporter: MetricsExporter | None = None
        self._lock: DbLock | None = None
        self._control: ControlServer | None = None
        self._bus: Bus | None = None

    @property
    def relay(self) -> Relay:
        if self._relay is None:
            raise RuntimeError("the relay has not started")
        return self._relay

    async def start(self) -> None:
        """Listen; on failure, undo what was started (the db lock included) and raise."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        config = self.config
        # Nothing is created (db, certificate, lock, control socket) before the port is
        # ours: a relay that cannot listen exits at once and leaves no files behind.
        check_paths(config)
        group = load_group(config)
        self._admission = Admission(
            config.max_connections, config.max_pending_per_address, raise_descriptor_limit()
        )
        self._server = Acceptor(
            self._new_connection,
            self._admission,
            handshake_timeout=config.handshake_timeout,
            proxies=config.proxies,
        )
        await self._server.bind(config.host, config.port)
        self.port = self._server.port
        context, self.fingerprint = tls_context(config)
        if not is_postgres_url(config.store_target):  # several relays may share PostgreSQL
            self._lock = DbLock(config.db).acquire("hushwire-relay")
        self._store = await Store.open(
            config.store_target,
            synchronous=config.synchronous,
            quota=config.quota,
            min_free_disk=config.min_free_disk,
        )
        self._control = ControlServer(config.control_path, self._control_request)
        await self._control.start()
        self._bus = open_bus(config.bus)
        self._relay = Relay(config, self._store, group, self._bus)
        await self._bus.start(self._relay.events)
        self._flushes = FlushQueue(asyncio.get_running_loop())
        self._server.start(context)
        for loop_fn in (self._watch_accounts, self._maintain):
            task = asyncio.create_task(loop_fn())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if config.metrics_listen is not None:
            await self._start_metrics(config.metrics_listen)
        log.info("certificate SHA-256 fingerprint %s", self.fingerprint)
        log.info("DH group %s", group.name)
        log.info("listening on %s:%d", config.host, self.port)
        sdnotify.notify(f"READY=1\nSTATUS=listening on {config.host}:{self.port}")

    def _new_connection(self, forwarded_for: str | None) -> Connection:
        return Connection(
            self.relay,
            flushes=self._flushes,
            admit=self._admit,
            on_finished=self._finished,
            forwarded_for=forwarded_for,
        )

    def _admit(self, conn: Connection) -> bool:
        """After the TLS handshake (counted since accept, relay/admission.py): refuse
        while closing."""
        if self._closing:
            self._admission.closed()
            return False
        self.connections.add(conn)
        return True

    def _finished(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self._admission.closed()
        if self._closing and not self.connections:
            self._all_finished.set()

    async def _watch_accounts(self) -> None:
        store = self.relay.store
        seq = await store.last_user_event()
        while True:
            await asyncio.sleep(ACCOUNT_POLL)
            try:
                latest = await store.last_user_event()
                if latest != seq:
                    await self.relay.enforce_accounts()
                    seq = latest
            except StoreError as exc:  # the database is down: keep polling until it is back
                log.warning("checking for account changes failed: %s", exc.message)

    async def _maintain(self) -> None:
        store = self.relay.store
        last_purge = 0.0
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            try:
                await store.checkpoint()
                now = time.time()
                if now - last_purge >= PURGE_EVERY:
                    cutoff = int(now - self.config.retention_days * 86400)
                    purged = await store.purge(older_than=cutoff)
                    last_purge = now
                    if purged:
                        log.info("purged %d envelope(s) past retention", purged)
            except StoreError as exc:  # the database is down: try again next round
                log.warning("store maintenance failed: %s", exc.message)

    async def close(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        sdnotify.notify("STOPPING=1\nSTATUS=draining connections")
        try:
            if self._exporter is not None:
                await self._exporter.close()
            if self._server is not None:
                self._server.close()
            for task in list(self._background):
                task.cancel()
            for conn in list(self.connections):
                conn.shutdown()
            if self.connections:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._all_finished.wait(), self.config.handshake_timeout * 3
                    )
            if self._control is not None:
                await self._control.close()
            if self._bus is not None:
                await self._bus.close()
            if self._store is not None:
                await self._store.close()
                log.info(
                    "%d group commits; %d envelopes acked before their commit (not written)",
                    self._store.group_commits,
                    self._store.elided,
                )
            log.info("relay stopped")
        finally:
            if self._lock is not None:
                self._lock.release()
            self._closed.set()

    async def _start_metrics(self, listen: str) -> None:
        # Imported here: prometheus-client is an optional extra, loaded only when used.
        try:
            from hushwire.relay.exporter import MetricsExporter
        except ImportError as exc:
            raise ConfigError(
                f"metrics_listen needs prometheus-client (pip install 'hushwire[metrics]'): {exc}"
            ) from None
        self._exporter = MetricsExporter(self.snapshot)
        self._exporter.start(*host_port(listen))

    async def snapshot(self) -> Snapshot:
        """Counters and gauges at this moment, for metrics and `hushwire-admin stats`."""
        relay = self.relay
        counters = relay.counters
        store = relay.store
        stats = await store.stats()
        authenticated = len(relay.online)
        pending = self._server.handshaking if self._server is not None else 0
        return Snapshot(
            authenticated=authenticated,
            handshaking=pending + max(0, len(self.connections) - authenticated),
            accept_failures=dict(self._server.failures) if self._server is not None else {},
            sends=counters.sends,
            envelopes=counters.envelopes,
            deliveries=counters.deliveries,
            acks=counters.acks,
            logins=dict(counters.logins),
            errors=dict(counters.errors),
            rate_limited=dict(counters.rate_limited),
            queued=stats["queued"],
            users=stats["users"],
            db_bytes=stats["db_bytes"],
            commit_batch=store.commit_batch.snapshot(),
            commit_seconds=store.commit_seconds.snapshot(),
        )

    async def _control_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """`hushwire-admin` asking through the control socket (relay/control.py)."""
        op = request.get("op")
        store = self.relay.store
        if op == "purge":
            older_than = request["older_than"]
            if not isinstance(older_than, int):
                raise TypeError("older_than must be a unix time")
            purged = await store.purge(older_than=older_than)
            log.info("purged %d envelope(s) on request of hushwire-admin", purged)
            return {"purged": purged}
        if op == "stats":
            snap = await self.snapshot()
            return {
                "online": sorted(self.relay.online),
                "connections": {
                    "authenticated": snap.authenticated,
                    "handshaking": snap.handshaking,
                },
                "queued_by_user": await store.queued_by_user(),
                "counters": {
                    "sends": snap.sends,
                    "envelopes": snap.envelopes,
                    "deliveries": snap.deliveries,
                    "acks": snap.acks,
                },
            }
        raise ValueError(f"unknown op {op!r}")

    async def serve(self, stop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run until `stop` returns (default: SIGINT or SIGTERM), then close.

        The signal handlers go in before `start()` logs "listening" and tells systemd
        READY=1: a SIGTERM sent the moment the relay is ready still drains it.
        """
        stopper = asyncio.ensure_future((stop or _signal_trigger)())
        await asyncio.sleep(0)  # one turn: the trigger installs its handlers
        try:
            await self.start()
            await stopper
        finally:
            stopper.cancel()
            await self.close()


async def _signal_trigger() -> None:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    try:
        await event.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        log.info("signal received: shutting down")
