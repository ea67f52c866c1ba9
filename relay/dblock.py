"""One relay per database: an exclusive lock on `DB.lock`, held while the relay runs.

The SQLite store caches per-user mailbox counts and the next envelope id, so two relays
writing one db would hand out the same ids; and `hushwire-admin restore` must never
replace a db under a running relay. Both take this lock with `flock(LOCK_EX|LOCK_NB)`.
The kernel drops it when the holder exits, even on SIGKILL, so a crash never leaves a
stale lock; the file itself stays (removing a lock file would race with its next user).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hushwire.relay.errors import DbLocked


def lock_path(db: Path) -> Path:
    return Path(f"{db}.lock")


class DbLock:
    """Held from `acquire` until `release` (or the process ends)."""

    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._fd: int | None = None

    def acquire(self, holder: str) -> DbLock:
        """Take the lock or raise DbLocked; `holder` is written in it for operators."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DbLocked(f"{self.path} is held by {other}") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock
