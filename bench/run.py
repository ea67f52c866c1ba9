"""hushwire vs Prosody, ejabberd, mosquitto and a minimal Python forwarder, interleaved.

    .venv/bin/python bench/run.py --quick     # ~2-3 minutes, one round
    .venv/bin/python bench/run.py             # full: 5 rounds, every shape (~25 min)
    # the relay on PostgreSQL: one relay, then 1-3 relays with a Redis bus, and SQLite
    .venv/bin/python bench/run.py --systems hushwire hushwire-pg hushwire-pg1 \
        hushwire-pg2 hushwire-pg3 --shapes chat --chat 200 --idle 200

hushwire-pg* systems start their own PostgreSQL (fsync on) and redis-server, pinned to
the servers' core with the relays; each process's CPU is read from /proc/PID/stat
(PostgreSQL's: the postmaster and all its backends).

Servers run pinned to core 0, this generator to core 1, everything over TLS on
127.0.0.1. Each round runs every shape against every system in turn (the order rotates
per round), so drift hits all systems alike: read the per-round ratios, not the
absolute numbers. See docs/performance.md for what each shape means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers, xmpp_servers
from bench.clients import Client, FloorClient, HushwireClient, MqttClient, Stats
from bench.xmpp import XmppClient

SERVER_CORE = 0
GEN_CORE = 1
CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 60.0
GEN_BOUND = 0.85  # generator CPU share above which a result is flagged


# --- systems ----------------------------------------------------------------------------


@dataclass
class System:
    name: str
    server: servers.Server | servers.Cluster
    events: int
    make: Callable[..., Client]
    stores: bool = True  # can hold messages for offline recipients
    skip: tuple[str, ...] = ()  # shapes not run against it
    fresh: bool = False  # restarted from its user template at the start of every round


def client_ssl() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # bench only: loopback, our own cert
    return ctx


CTX: ssl.SSLContext | None = None


async def connect(system: System, stats: Stats, index: int, **kw: Any) -> Client:
    loop = asyncio.get_running_loop()
    proto = system.make(stats, index, **kw)
    port = system.server.port_for(index)
    await loop.create_connection(lambda: proto, "127.0.0.1", port, ssl=CTX)
    await asyncio.wait_for(proto.ready, CONNECT_TIMEOUT)
    return proto


async def connect_many(system: System, stats: Stats, indexes: list[int], **kw: Any) -> list[Client]:
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> Client:
        async with sem:
            return await connect(system, stats, i, **kw)

    return list(await asyncio.gather(*(one(i) for i in indexes)))


async def close_all(conns: list[Client]) -> None:
    for c in conns:
        c.close()
    if conns:
        await asyncio.wait([asyncio.ensure_future(c.closed) for c in conns], timeout=10)


class Meter:
    """Generator and server CPU over a measured interval; for a cluster, also each of
    its processes' (`cpu_relay0`, `cpu_postgres`, `cpu_redis`: share of one core)."""

    def __init__(self, server: servers.Server | servers.Cluster) -> None:
        self.server = server
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.srv = server.cpu()
        self.parts = server.parts() if isinstance(server, servers.Cluster) else {}

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        out = {
            "wall": wall,
            "gen_cpu": (time.process_time() - self.cpu) / wall,
            "srv_cpu": (self.server.cpu() - self.srv) / wall,
        }
        if isinstance(self.server, servers.Cluster):
            now = self.server.parts()
            out |= {f"cpu_{k}": (now[k] - v) / wall for k, v in self.parts.items()}
        return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --- shapes -----------------------------------------------------------------------------


async def closed_loop(
    system: System, nconns: int, window: int, size: int, duration: float, warmup: float
) -> dict[str, float]:
    stats = Stats(system.events)
    conns = await connect_many(system, stats, list(range(nconns)))
    for i, c in enumerate(conns):
        c.dest, c.window, c.size = (i + 1) % nconns, window, size
    for c in conns:
        c.refill()
    await asyncio.sleep(warmup)
    stats.measuring = True
    meter = Meter(system.server)
    await asyncio.sleep(duration)
    stats.measuring = False
    m = meter.stop()
    stats.running = False
    for _ in range(100):  # let in-flight messages finish (bounded)
        if not stats.need:
            break
        await asyncio.sleep(0.05)
    await close_all(conns)
    lat = stats.lat
    return {
        "rate": stats.delivered / m["wall"],
        "p50": pct(lat, 0.5) * 1e3,
        "p99": pct(lat, 0.99) * 1e3,
        "errors": stats.errors,
        **m,
    }


async def open_loop(
    system: System, rate: float, duration: float, size: int = 256, nconns: int = 20
) -> dict[str, float]:
    """Offered load at `rate`, latency from each message's intended send time."""
    stats = Stats(system.events)
    conns = await connect_many(system, stats, list(range(nconns)))
    warmup = 0.5
    stats.measuring = True
    loop_start = time.perf_counter() + 0.01
    meter = None
    i = sent = 0
    end = loop_start + warmup + duration
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if meter is None and now >= loop_start + warmup:
            meter = Meter(system.server)
        due = int((now - loop_start) * rate)
        while i < due:
            intended = loop_start + i / rate
            c = conns[i % nconns]
            seq = stats.next_seq()
            if intended >= loop_start + warmup:
                stats.t0[seq] = intended
                sent += 1
            c.send_msg((c.index + 1) % nconns, seq, size)
            i += 1
        await asyncio.sleep(0.0002)
    assert meter is not None
    m = meter.stop()
    for _ in range(40):  # wait for stragglers, bounded
        if not stats.t0:
            break
        await asyncio.sleep(0.05)
    stats.measuring = False
    await close_all(conns)
    lat = stats.lat
    return {
        "rate": stats.delivered / duration,
        "p50": pct(lat, 0.5) * 1e3,
        "p99": pct(lat, 0.99) * 1e3,
        "p999": pct(lat, 0.999) * 1e3,
        "lost": sent - stats.delivered,
        **m,
    }


async def offline(
    system: System, total: int, nrecipients: int, nsenders: int = 20, window: int = 256
) -> dict[str, float]:
    """Enqueue `total` envelopes to offline recipients, then log them in and drain."""
    recipients = list(range(nsenders, nsenders + nrecipients))
    kw: dict[str, Any] = {}
    if isinstance(system.make(Stats(1), 0), MqttClient):
        # persistent sessions: subscribe once, go away, come back for the queue
        pre = await connect_many(system, Stats(1), recipients, clean=False)
        for c in pre:
            c.disconnect()  # type: ignore[attr-defined]
        await close_all(pre)
        kw = {"clean": False, "subscribe": False}
    stats = Stats(1)  # complete on the server's ack: nobody is there to receive
    senders = await connect_many(system, stats, list(range(nsenders)))
    per = total // nsenders
    for c in senders:
        c.dests, c.window, c.remaining = recipients, window, per
    meter = Meter(system.server)
    stats.measuring = True
    for c in senders:
        c.refill()
    deadline = time.perf_counter() + 120
    while (stats.need or any(c.remaining for c in senders)) and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls a bounded wait
        await asyncio.sleep(0.005)
    enq = meter.stop()
    await close_all(senders)
    # what the server acked within the deadline (a slow server may not take them all)
    stored = stats.acked
    drain = Stats(0)
    drain.drain_target = stored
    meter = Meter(system.server)
    conns = await connect_many(system, drain, recipients, **kw)
    try:
        await asyncio.wait_for(drain.drained.wait(), 120)
    except TimeoutError:
        pass
    dr = meter.stop()
    await close_all(conns)
    return {
        "rate": stored / enq["wall"],
        "gen_cpu": enq["gen_cpu"],
        "srv_cpu": enq["srv_cpu"],
        "drain": drain.delivered_total / dr["wall"],
        "drain_gen_cpu": dr["gen_cpu"],
        "drain_srv_cpu": dr["srv_cpu"],
        "errors": stats.errors,
        "stored": stored,
    }


async def handshakes(
    system: System, duration: float, pool: int, workers: int = 16
) -> dict[str, float]:
    done = 0
    stop = time.perf_counter() + duration
    meter = Meter(system.server)
    errors = 0

    async def worker(w: int) -> None:
        nonlocal done, errors
        k = 0
        while time.perf_counter() < stop:
            index = (w + k * workers) % pool
            k += 1
            try:
                c = await connect(system, Stats(1), index)
            except (OSError, RuntimeError, TimeoutError):
                errors += 1
                continue
            done += 1
            c.close()

    await asyncio.gather(*(worker(w) for w in range(workers)))
    m = meter.stop()
    await asyncio.sleep(0.5)
    return {"rate": done / m["wall"], "errors": errors, **m}


async def idle(system: System, n: int) -> dict[str, float]:
    """RSS per authenticated idle connection: server RSS delta over n connections."""
    await asyncio.sleep(0.5)
    before = system.server.rss()
    stats = Stats(1)
    t = time.perf_counter()
    conns = await connect_many(system, stats, list(range(n)))
    took = time.perf_counter() - t
    await asyncio.sleep(2.0)
    after = system.server.rss()
    alive = sum(1 for c in conns if not c.closed.done())
    await close_all(conns)
    return {"rate": (after - before) / n / 1024, "held": alive, "connect_s": took}


# --- driver -----------------------------------------------------------------------------


@dataclass
class Results:
    rows: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)

    def add(self, label: str, system: str, result: dict[str, float]) -> None:
        self.rows.setdefault(label, {}).setdefault(system, []).append(result)


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "-"
    if abs(v) >= 1000:
        return f"{v / 1000:.1f}k"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.2f}"


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}-{fmt(max(values))})"


# Ratios printed under each table. floor-acked / mosquitto-qos1 is what Python itself can
# reach with QoS 1's four frames and nothing else: a ceiling for any relay written in it.
RATIOS = (
    ("hushwire", "hushwire-baseline"),
    ("hushwire-devices", "hushwire-baseline-devices"),
    ("hushwire-devices", "hushwire"),
    ("hushwire-devices", "ejabberd"),
    ("hushwire-devices", "floor-acked"),
    ("hushwire", "prosody"),
    ("hushwire", "prosody-gen"),
    ("hushwire", "ejabberd"),
    ("hushwire", "mosquitto-qos1"),
    ("hushwire", "floor"),
    ("hushwire", "floor-acked"),
    ("floor-acked", "mosquitto-qos1"),
)


def print_processes(systems: dict[str, list[dict[str, float]]]) -> None:
    """For clusters: each process's share of a core and CPU per message (the one near
    100% is what bound the system: every server process shares core 0)."""
    rows = []
    for name, runs in systems.items():
        for key in [k for k in runs[0] if k.startswith("cpu_")]:
            share = statistics.median(r[key] for r in runs)
            per_msg = [r[key] / r["rate"] * 1e6 for r in runs if r["rate"] > 0]
            rows.append(f"| {name} | {key[4:]} | {share:.0%} | {spread(per_msg)} |")
    if rows:
        print("\n| system | process | CPU (share of a core) | us/msg |\n|---|---|---|---|")
        print("\n".join(rows))


def print_table(res: Results, label: str, unit: str, extra: tuple[str, ...] = ()) -> None:
    systems = res.rows.get(label, {})
    if not systems:
        return
    print(f"\n### {label}\n")
    head = [
        "system",
        f"{unit} median (min-max)",
        *extra,
        "gen CPU max",
        "server CPU",
        "server us/msg",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, runs in systems.items():
        cols = [name, spread([r["rate"] for r in runs])]
        cols += [spread([r.get(k, float("nan")) for r in runs]) for k in extra]
        gen = max(r.get("gen_cpu", float("nan")) for r in runs)
        flag = " GENERATOR-BOUND" if gen > GEN_BOUND else ""
        cols.append(f"{gen:.0%}{flag}" if gen == gen else "-")
        srv = [r["srv_cpu"] for r in runs if "srv_cpu" in r]
        cols.append(f"{statistics.median(srv):.0%}" if srv else "-")
        # Server CPU per message: what a CPU-bound server's throughput is the inverse of.
        per_msg = [r["srv_cpu"] / r["rate"] * 1e6 for r in runs if "srv_cpu" in r and r["rate"] > 0]
        cols.append(spread(per_msg) if per_msg else "-")
        print("| " + " | ".join(cols) + " |")
    print_processes(systems)
    for one, other in RATIOS:
        base, runs = systems.get(one), systems.get(other)
        if not base or not runs:
            continue
        ratios = [a["rate"] / b["rate"] for a, b in zip(base, runs, strict=False) if b["rate"]]
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"\n{one} / {other} per round: {per_round}; median {spread(ratios)}")
        # Server CPU per message, theirs over ours: on a shared machine a server may get a
        # fraction of its core, which moves msgs/s but much less the CPU each message took.
        cpu = [
            (b["srv_cpu"] / b["rate"]) / (a["srv_cpu"] / a["rate"])
            for a, b in zip(base, runs, strict=False)
            if a.get("srv_cpu") and b.get("srv_cpu") and a["rate"] and b["rate"]
        ]
        if cpu:
            print(f"  server CPU per message, {other} / {one}: median {spread(cpu)}")


async def main_async(args: argparse.Namespace) -> None:
    global CTX
    CTX = client_ssl()
    os.sched_setaffinity(0, {GEN_CORE})
    work = Path(tempfile.mkdtemp(prefix="hushwire-bench-"))
    print(f"workdir {work}", file=sys.stderr)
    servers.tls_material(work)
    nusers = max([*args.chat, args.bulk_conns, *args.idle, args.offline_recipients + 20])
    t = time.perf_counter()
    token = await servers.make_db(work / "relay.db", nusers)
    print(f"created {nusers} users in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    names = [servers.user_name(i) for i in range(nusers)]

    def hushwire_client(stats: Stats, index: int, **kw: Any) -> Client:
        return HushwireClient(stats, index, names[index], token, names)

    def hushwire_devices(stats: Stats, index: int, **kw: Any) -> Client:
        return HushwireClient(stats, index, names[index], token, names, devices=True)

    def baseline_devices(stats: Stats, index: int, **kw: Any) -> Client:
        # A relay from before acks without a reply: the client then waited for each one.
        return HushwireClient(
            stats, index, names[index], token, names, devices=True, quiet_acks=False
        )

    def mqtt(qos: int) -> Callable[..., Client]:
        return lambda stats, index, **kw: MqttClient(stats, index, qos, **kw)

    def xmpp(stats: Stats, index: int, **kw: Any) -> Client:
        return XmppClient(stats, index, xmpp_servers.HOST.encode())

    started = [
        servers.hushwire(work, SERVER_CORE, tuple(args.relay_flag)).start(),
        servers.mosquitto(work, SERVER_CORE).start(),
        servers.floor(work, SERVER_CORE).start(),
        servers.floor(work, SERVER_CORE, acks=True).start(),
    ]
    hw, mq, fl, fla = started
    # hushwire-devices: the same relay, sent to as real clients send (send_devices).
    systems = [
        System("hushwire", hw, 2, hushwire_client),
        System("hushwire-devices", hw, 2, hushwire_devices),
    ]
    if args.baseline is not None:
        base = servers.hushwire(work, SERVER_CORE, tuple(args.relay_flag), args.baseline)
        started.append(base.start())
        systems.append(System("hushwire-baseline", base, 2, hushwire_client))
        systems.append(System("hushwire-baseline-devices", base, 2, baseline_devices))
    systems += [
        System("mosquitto-qos1", mq, 2, mqtt(1)),
        System("mosquitto-qos0", mq, 1, mqtt(0), stores=False),
        System("floor", fl, 1, lambda stats, index, **kw: FloorClient(stats, index), stores=False),
        System(
            "floor-acked",
            fla,
            2,
            lambda stats, index, **kw: FloorClient(stats, index, acks=True),
            stores=False,
        ),
    ]
    # XMPP peers: not in the bulk shape (256 unacked stanzas per stream is not what
    # either server is built or tuned for; chat is the comparison that matters).
    xmpp_skip = ("bulk",)
    if {"prosody", "prosody-gen"} & set(args.systems):
        t = time.perf_counter()
        template = xmpp_servers.prosody_template(work, nusers)
        for gen in (False, True):
            name = "prosody-gen" if gen else "prosody"
            if name in args.systems:
                srv = xmpp_servers.prosody(work, SERVER_CORE, template, generational=gen)
                started.append(srv.start())
                systems.append(System(name, srv, 2, xmpp, skip=xmpp_skip, fresh=True))
        print(f"prosody users in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if "ejabberd" in args.systems:
        t = time.perf_counter()
        template = xmpp_servers.ejabberd_template(work, nusers)
        srv = xmpp_servers.ejabberd(work, SERVER_CORE, template)
        started.append(srv.start())
        systems.append(System("ejabberd", srv, 2, xmpp, skip=xmpp_skip, fresh=True))
        print(f"ejabberd users in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    infra: list[servers.Postgres | servers.Server] = []  # stopped after the systems
    clustered = [n for n in args.systems if n.startswith("hushwire-pg")]
    if clustered:
        # hushwire-pg: one relay on PostgreSQL, no bus (what a single relay runs);
        # hushwire-pgN: N relays on one PostgreSQL database with a Redis bus.
        postgres = servers.Postgres(SERVER_CORE)
        infra.append(postgres)
        bus = None
        if clustered != ["hushwire-pg"]:
            bus = servers.redis(work, SERVER_CORE).start()
            infra.append(bus)
        for name in clustered:
            url = postgres.database()
            t = time.perf_counter()
            await servers.make_db(url, nusers, token)
            print(f"{name}: {nusers} users in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            n = int(name.removeprefix("hushwire-pg") or 1)
            cluster = servers.hushwire_cluster(
                work,
                SERVER_CORE,
                postgres,
                url,
                n,
                None if name == "hushwire-pg" else bus,
                tuple(args.relay_flag),
            )
            started.append(cluster.start())
            systems.append(System(name, cluster, 2, hushwire_client))
    baselines = {"hushwire": "hushwire-baseline", "hushwire-devices": "hushwire-baseline-devices"}
    wanted = set(args.systems) | {baselines[n] for n in args.systems if n in baselines}
    systems = [s for s in systems if s.name in wanted]
    res = Results()
    try:
        for rnd in range(args.rounds):
            order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
            print(f"round {rnd + 1}/{args.rounds}: {[s.name for s in order]}", file=sys.stderr)
            for s in order:
                if s.fresh and rnd:
                    s.server.stop()
                    s.server.start()
                shapes = [shape for shape in args.shapes if shape not in s.skip]
                for n in args.chat if "chat" in shapes else ():
                    r = await closed_loop(s, n, 2, 256, args.duration, args.warmup)
                    res.add(f"chat {n} conns, 2 in flight, 256 B", s.name, r)
                    log(s.name, f"chat {n}", r)
                for size in args.bulk if "bulk" in shapes else ():
                    r = await closed_loop(s, args.bulk_conns, 256, size, args.duration, args.warmup)
                    res.add(f"bulk {args.bulk_conns} conns, 256 in flight, {size} B", s.name, r)
                    log(s.name, f"bulk {size}", r)
                for rate in args.rates if "latency" in shapes else ():
                    r = await open_loop(s, rate, args.duration)
                    res.add(f"latency at {fmt(rate)} msgs/s offered, 20 conns", s.name, r)
                    log(s.name, f"latency {rate}", r)
                if "offline" in shapes and s.stores:
                    r = await offline(s, args.offline, args.offline_recipients)
                    res.add(
                        f"offline: enqueue {fmt(args.offline)} to "
                        f"{args.offline_recipients} offline users, then drain",
                        s.name,
                        r,
                    )
                    log(s.name, "offline", r)
                if "handshakes" in shapes and s.name != "mosquitto-qos0":
                    r = await handshakes(s, args.duration, nusers)
                    res.add("handshakes: TLS connect + login, 16 at a time", s.name, r)
                    log(s.name, "handshakes", r)
        if "idle" in args.shapes:
            for n in args.idle:
                for s in systems:
                    if s.name == "mosquitto-qos0":
                        continue
                    s.server.stop()
                    s.server.start()
                    r = await idle(s, n)
                    res.add(f"idle: RSS per authenticated TLS connection, {n} conns", s.name, r)
                    log(s.name, f"idle {n}", r)
    finally:
        for srv in [*started, *infra]:
            srv.stop()
    print(
        f"\n## Results ({args.rounds} round(s), {time.strftime('%Y-%m-%d %H:%M')}, "
        f"servers on core {SERVER_CORE}, generator on core {GEN_CORE}, TLS)"
    )
    for label in res.rows:
        if label.startswith("latency"):
            print_table(res, label, "delivered/s", ("p50", "p99", "p999", "lost"))
        elif label.startswith("offline"):
            print_table(res, label, "enqueue/s", ("drain",))
        elif label.startswith("idle"):
            print_table(res, label, "KiB/conn", ("held",))
        elif label.startswith("handshakes"):
            print_table(res, label, "per s")
        else:
            print_table(res, label, "msgs/s", ("p50", "p99"))
    print("\nlatencies in ms; p50/p99 in closed-loop shapes are send-to-delivery.")
    if args.json:
        args.json.write_text(json.dumps(res.rows, indent=1))


def log(system: str, what: str, r: dict[str, float]) -> None:
    parts = " ".join(f"{k}={fmt(v)}" for k, v in r.items())
    print(f"  {system:15} {what:14} {parts}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one short round (~3 minutes)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=4.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument(
        "--shapes", nargs="+", default=["chat", "bulk", "latency", "offline", "handshakes", "idle"]
    )
    p.add_argument(
        "--systems",
        nargs="+",
        default=[
            "hushwire",
            "hushwire-devices",
            "prosody",
            "prosody-gen",
            "ejabberd",
            "mosquitto-qos1",
            "mosquitto-qos0",
            "floor",
            "floor-acked",
        ],
    )
    p.add_argument("--chat", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--bulk", type=int, nargs="+", default=[100, 256, 1024, 4096])
    p.add_argument("--bulk-conns", type=int, default=20)
    p.add_argument("--rates", type=float, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--offline", type=int, default=40000)
    p.add_argument("--offline-recipients", type=int, default=200)
    p.add_argument("--idle", type=int, nargs="+", default=[1000, 5000, 10000])
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run the relay of another checkout (e.g. a `git worktree` of "
        "an older commit) as system hushwire-baseline, interleaved",
    )
    p.add_argument("--json", type=Path, help="also write every run's raw figures here")
    p.add_argument(
        "--relay-flag",
        action="append",
        default=[],
        help="extra hushwire-relay flag (repeatable): --relay-flag=--synchronous=FULL",
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        # quick defaults; flags given explicitly still win
        p.set_defaults(
            rounds=1,
            duration=3.0,
            chat=[200],
            bulk=[256, 4096],
            rates=[1000, 5000],
            offline=20000,
            offline_recipients=100,
            idle=[1000],
        )
    return p.parse_args(argv)


def main() -> None:
    args = parse()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
