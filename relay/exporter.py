"""Prometheus metrics over HTTP (`--metrics-listen HOST:PORT`), with prometheus-client.

Imported only when that flag is set, so a relay without it never loads
prometheus-client. The relay counts in plain ints (relay/metrics.py); this module's
collector turns a snapshot of them into metric families at scrape time. The HTTP
server is prometheus-client's own, on its thread; each scrape asks the event loop for a
snapshot (`run_coroutine_threadsafe`), so it reads the counters where they are written,
never mid-update. A relay too busy to answer within SCRAPE_TIMEOUT fails the scrape,
which is itself the signal an operator wants.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from hushwire.relay.metrics import HistogramSnapshot, Snapshot

log = logging.getLogger("hushwire.relay.metrics")

SCRAPE_TIMEOUT = 10.0


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by(kind: type[Metric], name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = kind(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([str(key)], value)
    return family


def _histogram(name: str, doc: str, h: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [(floatToGoString(bound), n) for bound, n in h.cumulative]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.total)


def families(s: Snapshot) -> Iterator[Metric]:
    """The relay's metrics, from one snapshot."""
    yield _by(
        GaugeMetricFamily,
        "hushwire_connections",
        "Open client connections: logged in, or still in the TLS handshake or before login.",
        "state",
        {"authenticated": s.authenticated, "handshaking": s.handshaking},
    )
    yield _by(
        CounterMetricFamily,
        "hushwire_accept_failures",
        "Connections lost before the protocol started: accept() errors and refused TLS handshakes.",
        "stage",
        s.accept_failures,
    )
    yield _by(
        CounterMetricFamily, "hushwire_logins", "Login attempts by result.", "result", s.logins
    )
    yield _counter("hushwire_sends", "Send requests accepted (answered ok).", s.sends)
    yield _counter(
        "hushwire_envelopes_queued", "Envelopes accepted, one per recipient of a send.", s.envelopes
    )
    yield _counter("hushwire_deliveries", "Envelopes pushed to their recipient.", s.deliveries)
    yield _counter("hushwire_acks", "Envelopes acknowledged by their recipient.", s.acks)
    yield GaugeMetricFamily(
        "hushwire_mailbox_envelopes", "Envelopes stored and waiting for their recipient.", s.queued
    )
    yield GaugeMetricFamily("hushwire_users", "Accounts in the database.", s.users)
    yield GaugeMetricFamily("hushwire_db_bytes", "Size of the database and its WAL.", s.db_bytes)
    yield _histogram(
        "hushwire_commit_batch_size", "Operations written per group commit.", s.commit_batch
    )
    yield _histogram(
        "hushwire_commit_seconds",
        "Time from handing a group commit to the db until it is committed.",
        s.commit_seconds,
    )
    yield _by(
        CounterMetricFamily,
        "hushwire_errors",
        "Error frames sent to clients, by wire code.",
        "code",
        s.errors,
    )
    yield _by(
        CounterMetricFamily,
        "hushwire_rate_limited",
        "Requests refused by a rate limit, by kind.",
        "kind",
        s.rate_limited,
    )


class _Collector:
    def __init__(
        self, take: Callable[[], Awaitable[Snapshot]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._take = take
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        # Runs on the HTTP server's thread: the snapshot itself is taken on the loop.
        future = asyncio.run_coroutine_threadsafe(self._take(), self._loop)  # type: ignore[arg-type]
        yield from families(future.result(SCRAPE_TIMEOUT))


class MetricsExporter:
    """Serves `/metrics` until `close()`."""

    def __init__(self, take: Callable[[], Awaitable[Snapshot]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(take, asyncio.get_running_loop()))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)  # CPU, memory, open descriptors
        self._httpd: WSGIServer | None = None
        self.port = 0

    def start(self, host: str, port: int) -> None:
        httpd, _ = start_http_server(port, host, registry=self.registry)
        self._httpd = httpd
        self.port = httpd.server_port
        shown = f"[{host}]" if ":" in host else host
        log.info("metrics on http://%s:%d/metrics", shown, self.port)

    async def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
