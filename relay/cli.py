"""`hushwire-relay`: parse settings, set up logging, run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from hushwire.common.errors import HushwireError
from hushwire.relay.config import from_args
from hushwire.relay.logs import setup_logging
from hushwire.relay.server import RelayServer


def _run(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where present: its TLS keeps ~24 KiB per idle connection, not ~280 KiB."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# The cyclic GC's default gen0 threshold (700 allocations) runs collections thousands of
# times a second under load, and each older-generation pass walks every live object of
# every connection: about a third of the relay's CPU per message and most of its p99
# latency in the chat benchmark (docs/performance.md). Per-message objects are freed by
# reference counting; cyclic garbage is still collected, in larger, rarer passes.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Objects alive after startup (modules, config) never need scanning again."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    try:
        config = from_args(argv)
    except HushwireError as exc:
        print(f"hushwire-relay: {exc.message}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    server = RelayServer(config)
    tune_gc()
    try:
        _run(server.serve())
    except HushwireError as exc:
        logging.getLogger("hushwire.relay").error("%s", exc.message)
        return 1
    except OSError as exc:
        logging.getLogger("hushwire.relay").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
