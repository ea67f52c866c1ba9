"""Per-user limits shared by the relays of one deployment, without a Redis round trip
per request.

Each relay keeps its own token buckets (ratelimit.py) and answers from them at once.
What its users spent of the shared limits (`SHARED`: envelopes sent, bundles fetched)
it notes in a `SpendLog`; the bus (bus_redis.py) reports the log to the other relays
every REPORT_EVERY seconds, only for users that spent, and each relay charges what the
others report to its own buckets (`Relay.charge`). So N relays together hold a user
to one budget plus what the others spent in the last report interval: the bound is in
docs/security.md, "Several relays".
"""

from __future__ import annotations

import asyncio

# Seconds between two reports of one relay's spending (at most; none while nobody spends).
REPORT_EVERY = 0.2
# Users per bus message: a report of more is split, keeping each message small.
REPORT_KEYS = 1000
# The per-user limits shared across relays, by the `kind` Relay.limit counts them under.
SHARED = ("send", "fetch")

Spending = dict[str, dict[str, float]]  # kind -> user -> cost


class SpendLog:
    """What this relay's users spent of the shared limits since its last report."""

    def __init__(self) -> None:
        self._spent: Spending = {}
        self.waiting = asyncio.Event()  # set while something is left to report

    def spent(self, kind: str, user: str, cost: float) -> None:
        if not self._spent:
            self.waiting.set()
        costs = self._spent.setdefault(kind, {})
        costs[user] = costs.get(user, 0.0) + cost

    def take(self) -> list[Spending]:
        """Everything noted since the last take, in parts of at most REPORT_KEYS users."""
        spent, self._spent = self._spent, {}
        self.waiting.clear()
        parts: list[Spending] = []
        for kind, costs in spent.items():
            users = list(costs.items())
            for start in range(0, len(users), REPORT_KEYS):
                parts.append({kind: dict(users[start : start + REPORT_KEYS])})
        return parts
