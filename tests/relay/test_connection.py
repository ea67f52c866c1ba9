"""FlushQueue: one loop callback flushes every connection with output due."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hushwire.relay.connection import FlushQueue


class Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class Conn:
    """Stands in for a Connection: records its flushes; may fail or queue another."""

    def __init__(self, name: str, log: list[str], *, fail: bool = False) -> None:
        self.peer_address = name
        self.transport = Transport()
        self._log = log
        self._fail = fail
        self.then: tuple[FlushQueue, Conn] | None = None

    def _flush(self) -> None:
        self._log.append(self.peer_address)
        if self.then is not None:
            queue, other = self.then
            self.then = None
            queue.add(other)  # type: ignore[arg-type]
        if self._fail:
            raise RuntimeError("boom")


async def next_pass() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_one_callback_flushes_all_in_order() -> None:
    queue = FlushQueue(asyncio.get_running_loop())
    log: list[str] = []
    a, b = Conn("a", log), Conn("b", log)
    queue.add(a)  # type: ignore[arg-type]
    queue.add(b)  # type: ignore[arg-type]
    assert log == []  # nothing runs before the loop's next pass
    await next_pass()
    assert log == ["a", "b"]


async def test_a_failing_flush_does_not_stall_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = FlushQueue(asyncio.get_running_loop())
    log: list[str] = []
    bad, good = Conn("bad", log, fail=True), Conn("good", log)
    queue.add(bad)  # type: ignore[arg-type]
    queue.add(good)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="hushwire.relay.connection"):
        await next_pass()
    assert log == ["bad", "good"]
    assert bad.transport.aborted and not good.transport.aborted
    assert "flushing bad failed" in caplog.text


async def test_output_queued_during_a_flush_goes_in_the_next_pass() -> None:
    queue = FlushQueue(asyncio.get_running_loop())
    log: list[str] = []
    a, b = Conn("a", log), Conn("b", log)
    a.then = (queue, b)
    queue.add(a)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert log == ["a"]
    await next_pass()
    assert log == ["a", "b"]
