"""What the relay counts for operators: plain ints and fixed-bucket histograms.

The hot path (a send, a delivery, an ack) only does `counter += 1` on these: no
prometheus-client object, no lock, no label lookup. prometheus-client is loaded only
with `--metrics-listen` (relay/exporter.py), and turns a snapshot of these into the
exposition format when Prometheus scrapes. The snapshot is taken on the event loop,
so it never sees a half-made update. No label ever names a user.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from hushwire.common.errors import ErrorCode

LOGIN_RESULTS = (
    "ok",
    "auth_failed",
    "user_disabled",
    "rate_limited",
    "wrong_certificate",
    "account_has_devices",
)
RATE_LIMIT_KINDS = ("send", "login", "fetch", "publish", "ack", "who", "prekey_count", "ping")
# Operations (envelope batches, acks, login stamps) per group commit.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# Seconds from handing a group commit to the db thread until it is committed.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Prometheus-style buckets (`le` = less or equal), filled by `observe`."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.total)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; the last is above every bound
    total: float

    @property
    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it), ending with (inf, count)."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class RelayCounters:
    """Counters the relay increments as it works; they only ever grow."""

    __slots__ = (
        "acks",
        "deliveries",
        "envelopes",
        "errors",
        "logins",
        "rate_limited",
        "sends",
    )

    def __init__(self) -> None:
        self.sends = 0  # send requests answered ok
        self.envelopes = 0  # envelopes those sends queued (one per recipient)
        self.deliveries = 0  # envelopes pushed to a recipient
        self.acks = 0  # envelopes acknowledged by their recipient
        self.logins = dict.fromkeys(LOGIN_RESULTS, 0)
        self.errors = dict.fromkeys(ErrorCode, 0)  # error frames sent, by wire code
        self.rate_limited = dict.fromkeys(RATE_LIMIT_KINDS, 0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything an exporter or `hushwire-admin stats` reads, taken at one moment."""

    authenticated: int  # logged-in connections
    handshaking: int  # in the TLS handshake, or connected and not yet logged in
    # "accept" (the syscall), "handshake" (TLS), "admission" (refused at accept)
    accept_failures: dict[str, int]
    sends: int
    envelopes: int
    deliveries: int
    acks: int
    logins: dict[str, int]
    errors: dict[str, int]
    rate_limited: dict[str, int]
    queued: int  # envelopes committed and waiting in mailboxes
    users: int
    db_bytes: int
    commit_batch: HistogramSnapshot
    commit_seconds: HistogramSnapshot
