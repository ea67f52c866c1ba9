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


def test_refilled_buckets_expire_by_age():
    lim = RateLimiter(Rate(burst=2, per_second=1.0), max_keys=1000)
    for i in range(100):
        lim.consume(i, float(i) / 100)  # all touched within the first second
    assert len(lim) == 100
    lim.consume("late", 10.0)  # every earlier bucket has refilled by now: all forgotten
    assert len(lim) == 1


def test_retry_after_stores_nothing_for_unknown_keys():
    lim = RateLimiter(Rate(burst=1, per_second=1.0))
    for i in range(100):
        assert lim.retry_after(f"k{i}", 0.0) == 0
    assert len(lim) == 0


def test_forget_resets_a_key():
    lim = RateLimiter(Rate(burst=1, per_second=0.001))
    lim.consume("a", 0.0)
    assert lim.consume("a", 0.0) > 0
    lim.forget("a")
    assert lim.consume("a", 0.0) == 0


def test_address_prefixes():
    from hushwire.relay.addresses import address_prefix

    assert address_prefix("203.0.113.7") == address_prefix("203.0.113.250") == "203.0.113.0/24"
    assert address_prefix("203.0.114.7") != address_prefix("203.0.113.7")
    assert address_prefix("2001:db8::1") == address_prefix("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_prefix("2001:db8:0:1::1") != address_prefix("2001:db8::1")
    assert address_prefix("::ffff:203.0.113.7") == "203.0.113.0/24"
    assert address_prefix("unknown") == "unknown"


def test_a_charge_elsewhere_is_taken_even_past_empty():
    """Spending reported by another relay is taken whatever is left: the key then waits
    until it has refilled past the debt, and a key never seen starts from its burst."""
    limiter = RateLimiter(Rate(burst=4, per_second=2.0))
    limiter.charge("alice", 0.0, 6)  # 4 - 6: two below empty
    assert limiter.consume("alice", 0.0) == pytest.approx(1.5)  # (1 - -2) / 2
    assert limiter.consume("alice", 1.5) == 0.0
    limiter.charge("bob", 0.0, 3)
    assert limiter.consume("bob", 0.0) == 0.0 and limiter.consume("bob", 0.0) > 0
