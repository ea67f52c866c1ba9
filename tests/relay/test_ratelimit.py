import pytest

from hushwire.relay.ratelimit import Rate, RateLimiter


def test_burst_then_refill():
    lim = RateLimiter(Rate(burst=3, per_second=1.0))
    assert [lim.consume("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.consume("a", 0.0) == pytest.approx(1.0)
    assert lim.consume("a", 0.5) == pytest.approx(0.5)
    assert lim.consume("a", 1.0) == 0.0
    assert lim.consume("a", 1.0) > 0


def test_keys_are_independent():
    lim = RateLimiter(Rate(burst=1, per_second=0.1))
    assert lim.consume("a", 0) == 0
    assert lim.consume("a", 0) == pytest.approx(10.0)
    assert lim.consume("b", 0) == 0


def test_refused_attempt_takes_nothing():
    lim = RateLimiter(Rate(burst=1, per_second=1.0))
    lim.consume("a", 0)
    for _ in range(5):
        assert lim.consume("a", 0.5) > 0
    assert lim.consume("a", 1.0) == 0.0


def test_retry_after_does_not_consume():
    lim = RateLimiter(Rate(burst=1, per_second=1.0))
    assert lim.retry_after("a", 0) == 0
    assert lim.retry_after("a", 0) == 0
    assert lim.consume("a", 0) == 0


def test_clock_going_backwards_does_not_mint_tokens():
    lim = RateLimiter(Rate(burst=1, per_second=1.0))
    lim.consume("a", 100.0)
    assert lim.consume("a", 50.0) > 0


def test_memory_is_bounded():
    lim = RateLimiter(Rate(burst=1, per_second=0.001), max_keys=100)
    for i in range(1000):
        lim.consume(i, 0.0)
    assert len(lim) <= 100


def test_full_buckets_are_forgotten_first():
    lim = RateLimiter(Rate(burst=2, per_second=1.0), max_keys=10)
    lim.consume("hot", 0.0)
    lim.consume("hot", 0.0)
    for i in range(9):
        lim.retry_after(i, 0.0)  # full buckets
    lim.consume("new", 0.5)
    assert lim.consume("hot", 0.5) > 0  # still throttled: it was kept


def test_invalid_rates_rejected():
    with pytest.raises(ValueError):
        RateLimiter(Rate(burst=0, per_second=1))
    with pytest.raises(ValueError):
        RateLimiter(Rate(burst=1, per_second=0))
