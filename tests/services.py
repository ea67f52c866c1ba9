"""Real database servers for the tests: a PostgreSQL cluster in a temp dir on a free
loopback port, run as an unprivileged user (PostgreSQL refuses to run as root), and a
redis-server the same way (the bus between relays).

The cluster runs with fsync off: the tests crash relays, never the machine under the
server, so durability against power loss is not what they check.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PG_USER = "hushwire"
# The unprivileged system account the server runs as when the tests run as root.
RUN_AS = "nobody"


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin dir (Debian keeps it off PATH)."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hushwire-pg-")))
    port: int = 0
    _databases: int = 0
    # Tests crash relays, not the machine, so they skip syncs; bench/ measures the
    # server as an operator runs it (fsync on).
    durable: bool = False

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = RUN_AS if os.geteuid() == 0 else None
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.root,
            user=user,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def start(self) -> PostgresServer:
        """Create the cluster and start it on a free loopback port."""
        if os.geteuid() == 0:
            pw = pwd.getpwnam(RUN_AS)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(
            self.bindir / "initdb",
            "-D",
            self.root / "data",
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        for _ in range(5):  # a port found free can be taken before the server binds it
            self.port = free_port()
            started = self.start_server(check=False)
            if started.returncode == 0:
                return self
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")

    def start_server(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Start the server process (again) on `port`; returns once it accepts."""
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off"
        return self._run(
            self.bindir / "pg_ctl",
            "-D",
            self.root / "data",
            "-l",
            self.root / "server.log",
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "start",
            check=check,
        )

    def stop_server(self) -> None:
        """Stop the server process (fast shutdown: open sessions are cut)."""
        self._run(self.bindir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        self._databases += 1
        name = f"t{self._databases}"
        self._run(
            self.bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name
        )
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._run(
            self.bindir / "dropdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "--force",
            name,
        )


def redis_binary() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


@dataclass
class RedisServer:
    """A redis-server on a free loopback port, in a temp dir, without persistence (the
    relays keep nothing in Redis that matters after a restart)."""

    binary: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hushwire-redis-")))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        for _ in range(5):  # a port found free can be taken before the server binds it
            self.port = self.port or free_port()
            if self.start_server():
                return self
            self.port = 0
        raise RuntimeError(f"redis-server did not start: {self._log()}")

    def start_server(self) -> bool:
        """Start (again, on `port`); True once it accepts connections."""
        self.proc = subprocess.Popen(
            [
                *(str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.root), "--save", "", "--appendonly", "no"),
                *("--logfile", str(self.root / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            try:
                self.proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        return False

    def stop_server(self) -> None:
        """Stop the server process at once (SIGKILL: its clients see the connection drop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _log(self) -> str:
        log = self.root / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
