"""Token-bucket rate limits, keyed by user or address.

Pure: the caller passes `now` (monotonic seconds), so tests never patch a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`burst` events at once, refilled at `per_second` (e.g. 6 per 600 s = 0.01/s)."""

    burst: float
    per_second: float


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class RateLimiter:
    """Many buckets sharing one rate; full buckets are forgotten to bound memory."""

    def __init__(self, rate: Rate, *, max_keys: int = 100_000) -> None:
        if rate.burst < 1 or rate.per_second <= 0:
            raise ValueError("a rate needs burst >= 1 and per_second > 0")
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[object, _Bucket] = {}

    def _level(self, key: object, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.rate.burst, now)
        else:
            elapsed = max(0.0, now - bucket.stamp)
            bucket.level = min(self.rate.burst, bucket.level + elapsed * self.rate.per_second)
            bucket.stamp = now
        return bucket

    def retry_after(self, key: object, now: float, cost: float = 1.0) -> float:
        """0 if `cost` events may happen now, else the seconds until they may."""
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

    def _forget_full(self, now: float) -> None:
        burst, per_second = self.rate.burst, self.rate.per_second
        full = [
            k for k, b in self._buckets.items() if b.level + (now - b.stamp) * per_second >= burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            # Everyone is throttled: drop the oldest-touched half rather than grow.
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k].stamp)
            for k in oldest[: len(oldest) // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
