"""systemd's readiness protocol (sd_notify), without libsystemd.

Under `Type=notify`, systemd passes a datagram socket in NOTIFY_SOCKET: a path, or an
abstract socket written with a leading `@`. Each state is one datagram of
newline-separated `KEY=value` lines (`READY=1`, `STOPPING=1`, `STATUS=...`). Outside
systemd the variable is unset and this does nothing. A failure to notify is logged,
never fatal: the relay works the same, and systemd reports the missing readiness.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("hushwire.relay")


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `state` to systemd; True if it was sent."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %r: %s", environ["NOTIFY_SOCKET"], exc)
        return False
    return True
