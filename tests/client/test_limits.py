"""client/limits.py: the longest text is exact for a real, worst-case fan-out envelope."""

from __future__ import annotations

import msgpack

from hushwire.client.limits import max_text_bytes
from hushwire.common.crypto.dh import X25519
from hushwire.common.messages import ListVersion, SendDevices


async def test_max_text_bytes_is_exact_for_a_real_initial_envelope(make, directory):
    alice, _ = await make("alice"), await make("bob")
    limit = max_text_bytes(4096, X25519, "alice", "bob")
    out = await alice.prepare_send("bob", "x" * limit, directory.fetch)
    views = (ListVersion("alice", 1), ListVersion("bob", 0))
    frame = SendDevices(id=2**40, envelopes=out.envelopes(), lists=views).to_wire()
    size = len(msgpack.packb(frame, use_bin_type=True))
    # Tight: the worst case is only a bit larger (three prekey ids at 5 bytes, not 1;
    # a sent copy's plaintext; list versions at 9 bytes).
    assert size <= 4096 and 4096 - size < 64
