"""Token-bucket rate limits, keyed by user, address prefix or both.

Pure: the caller passes `now` (monotonic seconds), so tests never patch a clock.

Memory is bounded by entry count AND age: buckets live in least-recently-touched order;
a bucket untouched long enough to have refilled is the same as no bucket and is dropped
from the old end as new ones arrive, and past `max_keys` the least recently touched go
regardless. Keys must themselves be small (validated names, address prefixes): the
limiter bounds how many it keeps, the caller bounds what each costs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`burst` events at once, refilled at `per_second` (e.g. 6 per 600 s = 0.01/s)."""

    burst: float
    per_second: float

    @property
    def refill_seconds(self) -> float:
        """How long an empty bucket takes to fill: the age after which one is forgotten."""
        return self.burst / self.per_second


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class RateLimiter:
    """Many buckets sharing one rate, bounded by count and by age."""

    def __init__(self, rate: Rate, *, max_keys: int = 50_000) -> None:
        if rate.burst < 1 or rate.per_second <= 0:
            raise ValueError("a rate needs burst >= 1 and per_second > 0")
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, _Bucket] = OrderedDict()

    def _level(self, key: object, now: float) -> _Bucket:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._expire(now)
            bucket = buckets[key] = _Bucket(self.rate.burst, now)
        else:
            buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.level = min(self.rate.burst, bucket.level + elapsed * self.rate.per_second)
            bucket.stamp = max(bucket.stamp, now)
        return bucket

    def _expire(self, now: float) -> None:
        """Before adding a key: drop refilled buckets from the old end, then make room."""
        buckets = self._buckets
        horizon = now - self.rate.refill_seconds
        while buckets:
            oldest = next(iter(buckets.values()))
            if oldest.stamp > horizon and len(buckets) < self.max_keys:
                break
            buckets.popitem(last=False)

    def retry_after(self, key: object, now: float, cost: float = 1.0) -> float:
        """0 if `cost` events may happen now, else the seconds until they may.

        Takes nothing and stores nothing for a key it does not know (a full bucket)."""
        if key not in self._buckets:
            return 0.0 if cost <= self.rate.burst else float("inf")
        bucket = self._level(key, now)
        if bucket.level >= cost:
            return 0.0
        return (cost - bucket.level) / self.rate.per_second

    def consume(self, key: object, now: float, cost: float = 1.0) -> float:
        """Take `cost` if available and return 0, else take nothing and return the wait."""
        bucket = self._level(key, now)
        if bucket.level >= cost:
            bucket.level -= cost
            return 0.0
        return (cost - bucket.level) / self.rate.per_second

    def charge(self, key: object, now: float, cost: float) -> None:
        """Take `cost` whether or not it is there: spending seen on another relay. The
        level may go below zero; the key then waits until it has refilled past it."""
        self._level(key, now).level -= cost

    def forget(self, key: object) -> None:
        """Reset a key (e.g. its failures after a correct login)."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)
