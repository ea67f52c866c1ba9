"""Trying a profile's relays in order until one answers (docs/security.md, "Failover").

All relays of one deployment present one certificate or certificates of one CA, so the
same TLS settings hold for each. What fails over is what says nothing about who is at
the other end: a refused or timed-out connect, a TLS handshake that breaks, a connection
closed before login completes, and a relay that answers it cannot serve now
(`unavailable` or `internal`: its database is unreachable; `shutting_down`). A
certificate that is not the pinned one (or that the CA does not validate) is
CertificateMismatch and stops the search: it may be an attacker, and trying the next
address would hide that. A relay's refusal (wrong token, disabled account, rate limit)
is the deployment's answer and stops it too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from hushwire.client.errors import ConnectionClosed
from hushwire.client.settings import Address, format_address
from hushwire.common.errors import ErrorCode, RequestError

log = logging.getLogger("hushwire.client")

T = TypeVar("T")
# Refusals that are about that relay, not about us: another relay may serve. By wire
# code: `unavailable` (its database is unreachable) is newer than some clients' enum.
UNAVAILABLE = frozenset({ErrorCode.INTERNAL.value, ErrorCode.SHUTTING_DOWN.value, "unavailable"})


async def first_reachable(
    addresses: Sequence[Address],
    start: int,
    attempt: Callable[[Address], Awaitable[T]],
) -> tuple[int, T]:
    """`attempt` on each address from index `start` on, wrapping around; the index and
    result of the first that does not raise ConnectionClosed or an UNAVAILABLE refusal.

    With one address its own ConnectionClosed is raised unchanged; with several, one
    ConnectionClosed names them all and why each failed.
    """
    count = len(addresses)
    failures: list[str] = []
    for step in range(count):
        index = (start + step) % count
        name = format_address(addresses[index])
        try:
            return index, await attempt(addresses[index])
        except ConnectionClosed as exc:
            if count == 1:
                raise
            failures.append(exc.message)
        except RequestError as exc:
            if count == 1 or exc.code.value not in UNAVAILABLE:
                raise
            failures.append(f"{name} answered {exc.code.value}: {exc.message}")
        log.info("relay %s: %s; trying the next", name, failures[-1])
    names = ", ".join(format_address(a) for a in addresses)
    raise ConnectionClosed(f"could not reach any of {names} ({'; '.join(failures)})")
