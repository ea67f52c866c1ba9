"""bench/servers.py: the CPU of a server made of many processes (PostgreSQL's postmaster
and its backends) is read from /proc, exited children included."""

from __future__ import annotations

import subprocess
import sys

from bench.servers import process_cpu, tree_cpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
# A parent that burns nothing itself: one child burns 0.3 s and exits (reaped: its time
# lands in the parent's cutime), a second burns 0.3 s and stays until stdin closes.
PARENT = f"""
import subprocess, sys
subprocess.run([sys.executable, "-c", {BURN!r}], check=True)
alive = subprocess.Popen([sys.executable, "-c", {BURN!r} + "print('burnt', flush=True)\\ninput()"],
                         stdout=sys.stdout, stdin=sys.stdin)
alive.wait()
"""


def test_tree_cpu_counts_live_and_exited_children():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline().strip() == "burnt"  # both children have burnt
        own, tree = process_cpu(parent.pid), tree_cpu(parent.pid)
        assert own < 0.25  # the parent itself only started them
        assert tree >= own + 0.5  # 0.3 s each, less a clock tick of rounding
    finally:
        parent.stdin.close()
        parent.wait(60)
