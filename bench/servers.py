"""Start the servers as subprocesses pinned to one core, on 127.0.0.1.

hushwire: `python -m relay.cli` on a temp db with N users (created through relay.store
and relay.tokens), benchmark flags lifting the per-sender limits.
mosquitto, prosody, ejabberd: the Debian packages (installed with apt-get if missing),
own configs, TLS with the same certificate (bench/xmpp_servers.py for the XMPP two).
floor: `python -m bench.floor`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hushwire.client.service import HushwireClient, RelaySettings
from hushwire.client.store import KdfParams
from hushwire.relay.store import Store
from hushwire.relay.tls import ensure_server_cert, fingerprint
from hushwire.relay.tokens import hash_token, new_salt, new_token

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
START_WAIT = 30.0
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Benchmark flags: the defaults (60 envelopes/s per sender, 10k mailbox, a sender's
# share of 2,000, 10k acked ids/s) are for real users; a load generator is one user
# sending thousands per second, from one address.
RELAY_FLAGS = (
    "--send-rate",
    "1000000000",
    "--send-burst",
    "1000000000",
    "--max-mailbox",
    "10000000",
    "--max-mailbox-bytes",
    "100000000000",
    "--max-per-sender",
    "10000000",
    "--max-per-sender-bytes",
    "100000000000",
    "--ack-rate",
    "1000000000",
    "--ack-burst",
    "1000000000",
    "--max-pending-per-address",
    "30000",
    "--max-connections",
    "30000",
    "--idle-timeout",
    "3600",
    "--handshake-timeout",
    "60",
)


def user_name(i: int) -> str:
    return f"u{i}"


async def login_client(
    work: Path, port: int, i: int, token: str, pin: str, *, profile: str = "", kdf_n: int = 2**10
) -> HushwireClient:
    """Bench user i's real client, logged in with a fresh profile (work/profile, default
    its user name) to the relay on `port`; a cheap profile KDF unless told otherwise."""
    settings = RelaySettings("127.0.0.1", port, user_name(i), token, pin=pin)
    return await HushwireClient.login(
        work / (profile or user_name(i)), "bench", settings, kdf=KdfParams(n=kdf_n)
    )


async def make_db(db: Path | str, n: int, token: str | None = None) -> str:
    """A fresh relay db (a file, or an empty PostgreSQL database's URL) with users
    u0..u{n-1}, all with one token (bench only): `token`, or a new one."""
    token = token or new_token()
    async with await Store.open(db) as store:
        for i in range(n):
            salt = new_salt()
            await store.add_user(user_name(i), hash_token(token, salt), salt, now=0)
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        core: int,
        port: int | None = None,
        cwd: Path = ROOT,
        prepare: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.prepare = prepare  # run before every start (e.g. a fresh copy of the data)
        self.env = env
        self.cwd = cwd
        self.argv = ["taskset", "-c", str(core), *argv]
        self.log_path = log
        self.fixed_port = port
        self.port = port or 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.port = self.fixed_port or 0
        if self.prepare is not None:
            self.prepare()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
        )
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()}")
            if self.port:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return self
                except OSError:
                    pass
            else:
                m = LISTENING.search(self.log_path.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start within {START_WAIT} s")

    def port_for(self, index: int) -> int:
        """The port client `index` connects to (one server: its only one)."""
        return self.port

    def cpu(self) -> float:
        """User + system CPU seconds of the server process (all threads)."""
        assert self.proc is not None
        return process_cpu(self.proc.pid)

    def rss(self) -> int:
        assert self.proc is not None
        pages = int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1])
        return pages * PAGE

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name (field 3, the state, is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (parent pid is stat field 4)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    return children


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and every descendant alive, plus what its exited children
    used (cutime + cstime): PostgreSQL's postmaster and its backends, as one server."""
    children = _children()
    fields = _stat(pid)
    total = (int(fields[13]) + int(fields[14])) / TICK
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += process_cpu(p)
        except OSError:
            continue
        todo += children.get(p, [])
    return total


class Postgres:
    """A PostgreSQL cluster of its own (tests/services.py starts it: temp dir, free
    loopback port, unprivileged user), with fsync on as an operator runs it, pinned to
    `core` like the other servers (backends inherit the postmaster's affinity)."""

    def __init__(self, core: int) -> None:
        from tests.services import PostgresServer, postgres_bindir

        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.server = PostgresServer(bindir, durable=True).start()
        pid_file = self.server.root / "data" / "postmaster.pid"
        self.pid = int(pid_file.read_text().split()[0])
        for p in [self.pid, *_children().get(self.pid, [])]:
            os.sched_setaffinity(p, {core})

    def database(self) -> str:
        return self.server.create_database()

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def stop(self) -> None:
        self.server.stop()


class Cluster:
    """`relays` hushwire-relay processes on one PostgreSQL database (and one Redis bus),
    as one system: client i connects to relay i % n; `cpu()` is the relays' CPU and
    `parts()` says which process spent what (each relay, PostgreSQL, Redis)."""

    def __init__(
        self, name: str, relays: list[Server], postgres: Postgres, redis: Server | None
    ) -> None:
        self.name = name
        self.relays = relays
        self.postgres = postgres
        self.redis = redis

    @property
    def port(self) -> int:
        return self.relays[0].port

    def port_for(self, index: int) -> int:
        return self.relays[index % len(self.relays)].port

    def start(self) -> Cluster:
        for r in self.relays:
            r.start()
        return self

    def cpu(self) -> float:
        return sum(r.cpu() for r in self.relays)

    def parts(self) -> dict[str, float]:
        parts = {f"relay{i}": r.cpu() for i, r in enumerate(self.relays)}
        parts["postgres"] = self.postgres.cpu()
        if self.redis is not None:
            parts["redis"] = self.redis.cpu()
        return parts

    def rss(self) -> int:
        return sum(r.rss() for r in self.relays)

    def stop(self) -> None:
        for r in self.relays:
            r.stop()


def redis(workdir: Path, core: int) -> Server:
    """redis-server without persistence, as the bus only needs (docs/operations.md)."""
    binary = ensure_package("/usr/bin/redis-server", ("redis-server",))
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(workdir)]
    return Server("redis", argv, workdir / "redis.log", core, port=port)


def hushwire_cluster(
    workdir: Path,
    core: int,
    postgres: Postgres,
    url: str,
    relays: int,
    bus: Server | None,
    extra: tuple[str, ...] = (),
) -> Cluster:
    """`relays` relays on the database at `url` (users made by the caller), each with its
    own directory (control socket), all with the one certificate; with the bus when
    `bus` is given."""
    name = f"hushwire-pg{relays}" if bus is not None else "hushwire-pg"
    servers = []
    for i in range(relays):
        home = workdir / f"{name}-{i}"
        home.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "hushwire.relay.cli", "--db", str(home / "relay.db")]
        argv += ["--cert", str(workdir / "relay-cert.pem"), "--key", str(workdir / "relay-key.pem")]
        argv += ["--store", url, "--port", "0", *RELAY_FLAGS, *extra]
        if bus is not None:
            argv += ["--bus", f"redis://127.0.0.1:{bus.port}/0"]
        servers.append(Server(f"{name}-{i}", argv, home / "relay.log", core))
    return Cluster(name, servers, postgres, bus)


def tls_material(workdir: Path) -> tuple[Path, Path, str]:
    cert, key = workdir / "relay-cert.pem", workdir / "relay-key.pem"
    ensure_server_cert(cert, key, ["127.0.0.1"])
    return cert, key, fingerprint(cert)


def hushwire(
    workdir: Path, core: int, extra: tuple[str, ...] = (), checkout: Path | None = None
) -> Server:
    """This checkout's relay, or with `checkout` another one's on its own copy of the db,
    to compare two versions interleaved. The installed `hushwire` package is this
    checkout (editable), so the other one is put first on PYTHONPATH as a `hushwire`
    directory of links to its top-level folders."""
    env = None
    if checkout is None:
        name, db, cwd = "hushwire", workdir / "relay.db", ROOT
    else:
        name, db, cwd = "hushwire-baseline", workdir / "baseline.db", checkout
        shutil.copyfile(workdir / "relay.db", db)
        package = workdir / "baseline-path" / "hushwire"
        package.mkdir(parents=True, exist_ok=True)
        for part in ("relay", "client", "common", "migrations"):
            link = package / part
            if not link.exists():
                link.symlink_to(Path(checkout).resolve() / part)
        env = {**os.environ, "PYTHONPATH": str(package.parent)}
    argv = [
        sys.executable,
        "-m",
        "hushwire.relay.cli",
        "--db",
        str(db),
        "--port",
        "0",
        *RELAY_FLAGS,
        *extra,
    ]
    return Server(name, argv, workdir / f"{name}.log", core, cwd=cwd, env=env)


def floor(workdir: Path, core: int, *, acks: bool = False) -> Server:
    name = "floor-acked" if acks else "floor"
    argv = [
        sys.executable,
        "-m",
        "bench.floor",
        "--cert",
        str(workdir / "relay-cert.pem"),
        "--key",
        str(workdir / "relay-key.pem"),
        *(["--acks"] if acks else []),
    ]
    return Server(name, argv, workdir / f"{name}.log", core)


def ensure_package(binary: str, packages: tuple[str, ...]) -> str:
    """The path of a Debian package's binary, installing the packages if it is missing."""
    if Path(binary).exists():
        return binary
    print(f"{binary} missing: installing {' '.join(packages)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y", "-qq", *packages],
        check=True,
        env=env,
        timeout=1200,
    )
    return binary


def mosquitto(workdir: Path, core: int) -> Server:
    binary = ensure_package("/usr/sbin/mosquitto", ("mosquitto",))
    port = free_port()
    conf = workdir / "mosquitto.conf"
    # The same certificate as the relay; persistence off; TCP_NODELAY like asyncio's;
    # in-flight window like hushwire's delivery_window; no queue cap (offline shape).
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"certfile {workdir / 'relay-cert.pem'}\n"
        f"keyfile {workdir / 'relay-key.pem'}\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "set_tcp_nodelay true\n"
        "max_inflight_messages 256\n"
        "max_queued_messages 0\n"
        "user root\n"
        "log_type error\n"
    )
    return Server(
        "mosquitto", [binary, "-c", str(conf)], workdir / "mosquitto.log", core, port=port
    )


async def wait_quiet(server: Server, seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)
