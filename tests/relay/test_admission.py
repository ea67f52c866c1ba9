"""Admission counts connections from accept, handshakes per address prefix included."""

from __future__ import annotations

import logging
import resource

from hushwire.relay.admission import RESERVED_DESCRIPTORS, Admission, raise_descriptor_limit


def test_pending_handshakes_are_bounded_per_prefix_and_released():
    adm = Admission(max_connections=1000, max_pending_per_address=2, descriptors=10_000)
    a, b = adm.accept("203.0.113.1"), adm.accept("203.0.113.200")
    assert a == b == "203.0.113.0/24"
    assert adm.accept("203.0.113.7") is None  # a third handshake from that /24
    assert adm.accept("198.51.100.1") is not None  # another network is not affected
    adm.handshake_done(a, ok=False)  # failed: closed, frees its place and its count
    assert adm.open == 2 and adm.pending == 2
    assert adm.accept("203.0.113.9") is not None
    adm.handshake_done(b, ok=True)  # established: no longer pending, still open
    assert adm.pending == 2 and adm.open == 3
    adm.closed()
    assert adm.open == 2 and adm.refused == 1


def test_the_connection_limit_stays_under_the_descriptor_limit():
    adm = Admission(max_connections=20_000, max_pending_per_address=10_000, descriptors=1024)
    assert adm.limit == 1024 - RESERVED_DESCRIPTORS
    for i in range(adm.limit):
        assert adm.accept(f"10.{i // 250}.{i % 250}.1") is not None
    assert adm.accept("192.0.2.1") is None  # handshakes count too


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        assert raise_descriptor_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_descriptor_reserve_is_routine_a_short_limit_is_warned(caplog):
    """A default start (max_connections == the descriptor limit) must not warn."""
    with caplog.at_level(logging.INFO, logger="hushwire.relay.admission"):
        Admission(20_000, 128, 20_000)
        Admission(50_000, 128, 1_024)
    levels = [(r.levelno, r.getMessage().split(" exceeds")[0]) for r in caplog.records]
    assert levels == [
        (logging.INFO, "max_connections 20000"),
        (logging.WARNING, "max_connections 50000"),
    ]
