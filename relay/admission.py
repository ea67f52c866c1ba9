"""Which connections the relay takes: counted from accept(), not from login.

A connection holds a descriptor from accept() on, through its TLS handshake (up to the
handshake timeout), so connections still shaking hands count against
`max_connections` like established ones, and at most `max_pending_per_address` may
shake hands at once from one address prefix (/24 or /64, relay/addresses.py): idle TCP
sockets from one network cannot use up the descriptors that real logins need. The
limit is also kept below the process's descriptor limit, which the relay raises from
its soft to its hard value at start, leaving room for the db, logs and listeners.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter

from hushwire.relay.addresses import address_prefix

log = logging.getLogger("hushwire.relay.admission")

# Descriptors kept for everything that is not a client: db + WAL + SHM, listeners,
# log files, the event loop's own, a TLS certificate read, the metrics socket. (Under a
# limit too small for that, a quarter of it.)
RESERVED_DESCRIPTORS = 64


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit some kernels refuse
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


class Admission:
    """Counts connections from accept to close and pending handshakes per prefix."""

    def __init__(self, max_connections: int, max_pending_per_address: int, descriptors: int):
        reserved = min(RESERVED_DESCRIPTORS, descriptors // 4)
        self.limit = max(1, min(max_connections, descriptors - reserved))
        self.max_pending = max_pending_per_address
        self.open = 0  # accepted and not yet closed: shaking hands or established
        self._pending: Counter[str] = Counter()
        self.refused = 0
        if self.limit < max_connections:
            # A warning only when the limit itself is short of what was asked; keeping a
            # few descriptors for the db, logs and listeners is routine.
            level = logging.WARNING if descriptors < max_connections else logging.INFO
            log.log(
                level,
                "max_connections %d exceeds what %d descriptors allow; taking at most %d",
                max_connections,
                descriptors,
                self.limit,
            )

    def accept(self, address: str) -> str | None:
        """At accept(): the prefix to count the handshake under, or None to refuse."""
        prefix = address_prefix(address)
        if self.open >= self.limit or self._pending[prefix] >= self.max_pending:
            self.refused += 1
            return None
        self.open += 1
        self._pending[prefix] += 1
        return prefix

    def handshake_done(self, prefix: str, *, ok: bool) -> None:
        """The TLS handshake ended: established (still open), or failed (closed)."""
        left = self._pending[prefix] - 1
        if left > 0:
            self._pending[prefix] = left
        else:
            del self._pending[prefix]
        if not ok:
            self.open -= 1

    def closed(self) -> None:
        """An established connection ended."""
        self.open -= 1

    @property
    def pending(self) -> int:
        return sum(self._pending.values())
