"""Prometheus metrics of a real relay process, scraped during a real conversation."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import urllib.request

import pytest

from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.common.errors import RequestError
from hushwire.common.messages import Ack, Deliver, Send
from hushwire.relay.config import ConfigError, RelayConfig
from hushwire.relay.metrics import Histogram
from tests.support import WAIT, add_users

prometheus_parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus-client (the `metrics` extra) is not installed"
)


async def scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
            assert r.status == 200
            return r.read().decode()

    return await asyncio.to_thread(get)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def metrics_relay(tmp_path, daemons, *extra):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db, "--metrics-listen", "127.0.0.1:0", *extra)
    line = await relay.wait_log(r"metrics on http://127\.0\.0\.1:\d+/metrics")
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    return relay, tokens, port


async def test_counters_move_during_a_conversation(tmp_path, daemons):
    relay, tokens, port = await metrics_relay(
        tmp_path, daemons, "--send-burst", "3", "--send-rate", "0.001"
    )
    before = await scrape(port)
    assert value(before, "hushwire_sends_total") == 0
    assert value(before, "hushwire_connections", state="authenticated") == 0

    alice = await relay.login("alice", tokens["alice"])
    bob = await relay.login("bob", tokens["bob"])
    wrong = await RelayConnection.connect(
        "127.0.0.1", relay.port, TlsSettings(pin=relay.fingerprint)
    )
    with pytest.raises(RequestError):
        await wrong.handshake("bob", "hw_wrong")
    await wrong.close()
    for i in range(3):
        await alice.request(Send, to=("bob",), body=b"m%d" % i)
    with pytest.raises(RequestError) as refused:
        await alice.request(Send, to=("bob",), body=b"one too many")
    assert refused.value.code == "rate_limited"
    got = 0
    while got < 3:
        push = await asyncio.wait_for(bob.pushes.get(), WAIT)
        if isinstance(push, Deliver):
            await bob.request(Ack, mids=(push.mid,))
            got += 1

    during = await scrape(port)
    assert value(during, "hushwire_connections", state="authenticated") == 2
    assert value(during, "hushwire_logins_total", result="ok") == 2
    assert value(during, "hushwire_logins_total", result="auth_failed") == 1
    assert value(during, "hushwire_sends_total") == 3
    assert value(during, "hushwire_envelopes_queued_total") == 3
    assert value(during, "hushwire_deliveries_total") == 3
    assert value(during, "hushwire_acks_total") == 3
    assert value(during, "hushwire_errors_total", code="auth_failed") == 1
    assert value(during, "hushwire_errors_total", code="rate_limited") == 1
    assert value(during, "hushwire_rate_limited_total", kind="send") == 1
    assert value(during, "hushwire_rate_limited_total", kind="fetch") == 0
    assert value(during, "hushwire_mailbox_envelopes") == 0
    assert value(during, "hushwire_users") == 2
    commits = value(during, "hushwire_commit_seconds_count")
    assert commits >= 1
    assert value(during, "hushwire_commit_batch_size_count") == commits
    assert value(during, "hushwire_commit_batch_size_bucket", le="+Inf") == commits
    assert value(during, "hushwire_commit_batch_size_sum") >= 1
    # No label or value names a user.
    assert "alice" not in during and "bob" not in during

    await bob.close()
    await alice.close()
    await relay.stop()


async def test_exposition_passes_promtool(tmp_path, daemons):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found (Debian package `prometheus`; .ci/run installs it)")
    relay, tokens, port = await metrics_relay(tmp_path, daemons)
    alice = await relay.login("alice", tokens["alice"])
    await alice.request(Send, to=("bob",), body=b"hello")
    text = await scrape(port)
    assert value(text, "hushwire_mailbox_envelopes") == 1
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(check.communicate(text.encode()), WAIT)
    assert check.returncode == 0, output.decode()
    await alice.close()
    await relay.stop()


IMPORTS = """
import asyncio, sys
from pathlib import Path
from hushwire.relay.config import RelayConfig
from hushwire.relay.server import RelayServer

async def main(listen):
    server = RelayServer(RelayConfig(db=Path(sys.argv[1]), port=0, metrics_listen=listen))
    await server.start()
    await server.close()

asyncio.run(main(sys.argv[2] or None))
print("prometheus_client" in sys.modules)
"""


@pytest.mark.parametrize(("listen", "loaded"), [("", "False"), ("127.0.0.1:0", "True")])
def test_prometheus_client_is_imported_only_with_the_flag(tmp_path, listen, loaded):
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(tmp_path / "relay.db"), listen],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == loaded


@pytest.mark.parametrize("bad", ["9464", "host:", ":9464", "host:port", "host:70000"])
def test_bad_metrics_listen_is_refused(bad):
    with pytest.raises(ConfigError):
        RelayConfig(metrics_listen=bad).validate()


def test_histogram_buckets_are_less_or_equal():
    h = Histogram((1, 5))
    for v in (0.5, 1, 1.5, 5, 7):
        h.observe(v)
    snap = h.snapshot()
    assert snap.cumulative == [(1, 2), (5, 4), (float("inf"), 5)]
    assert snap.total == 15.0
