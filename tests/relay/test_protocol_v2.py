"""Protocol version 2 at the relay, over real TLS and SQLite: version negotiation, the
KEM prekey directory, and typed answers between version-1 and version-2 clients."""

from __future__ import annotations

from hushwire.common.errors import ErrorCode
from hushwire.common.keys import KemPrekey
from hushwire.common.messages import FetchBundle, Hello, PrekeyCount, PublishKeys
from tests.relay.test_server import expect_error, identity, otpks, spk


def kem(pid: int) -> KemPrekey:
    return KemPrekey(pid, pid.to_bytes(2, "big") * 592, bytes([pid % 256]) * 64)


async def publish_v2(conn, *, one_time_kem=3):
    return await conn.request(
        PublishKeys,
        identity=identity(2),
        signed_prekey=spk(2),
        one_time_prekeys=otpks(1, 5),
        kem_last_resort=kem(900),
        one_time_kem_prekeys=tuple(kem(100 + i) for i in range(one_time_kem)),
    )


async def test_hello_picks_the_newest_common_version(relay):
    v2 = await (await relay.connect()).request(Hello, versions=(1, 2), client="t")
    assert v2.version == 2 and v2.features == ("ack_no_reply", "group_payload")
    v1 = await (await relay.connect()).request(Hello, versions=(1,), client="t")
    assert v1.version == 1 and v1.features == ()  # both features are version-2 fields
    err = await expect_error(
        ErrorCode.UNSUPPORTED_VERSION,
        (await relay.connect()).request(Hello, versions=(3,), client="t"),
    )
    assert err.versions == (1, 2)


async def test_an_operator_can_turn_version_1_off(relay_factory):
    relay = await relay_factory(min_protocol=2)
    err = await expect_error(
        ErrorCode.UNSUPPORTED_VERSION,
        (await relay.connect()).request(Hello, versions=(1,), client="old"),
    )
    assert err.versions == (2,) and "[2]" in err.message
    conn = await relay.login("alice", version=2)
    assert conn.hello is not None and conn.hello.version == 2


async def test_kem_prekeys_are_handed_out_once_then_the_last_resort_one(relay):
    bob = await relay.login("bob", version=2)
    ok = await publish_v2(bob, one_time_kem=2)
    assert (ok.prekeys_left, ok.kem_prekeys_left) == (5, 2)
    alice = await relay.login("alice", version=2)
    got = [(await alice.request(FetchBundle, user="bob")).bundle for _ in range(4)]
    assert all(b.version == 2 and b.kem_prekey is not None for b in got)
    assert [b.kem_prekey.id for b in got] == [100, 101, 900, 900]
    assert got[0].kem_prekey == kem(100) and got[2].kem_prekey == kem(900)
    count = await bob.request(PrekeyCount)
    assert (count.count, count.kem_count) == (1, 0)
    login = await (await relay.connect()).handshake("bob", relay.tokens["bob"])
    assert (login.key_version, login.kem_prekeys_left, login.prekeys_left) == (2, 0, 1)


async def test_a_version_1_client_gets_a_typed_answer_for_a_version_2_user(relay):
    bob = await relay.login("bob", version=2)
    await publish_v2(bob)
    old = await relay.login("alice", version=1)
    err = await expect_error(ErrorCode.UNSUPPORTED_VERSION, old.request(FetchBundle, user="bob"))
    assert err.versions == (2,) and "upgrade" in err.message
    count = await bob.request(PrekeyCount)
    assert (count.count, count.kem_count) == (5, 3)  # nothing consumed


async def test_a_version_2_client_gets_a_typed_answer_for_a_version_1_user(relay):
    bob = await relay.login("bob", version=1)
    await bob.request(
        PublishKeys, identity=identity(2), signed_prekey=spk(2), one_time_prekeys=otpks(1, 5)
    )
    new = await relay.login("alice", version=2)
    err = await expect_error(ErrorCode.UNSUPPORTED_VERSION, new.request(FetchBundle, user="bob"))
    assert err.versions == (1,) and "only version 1" in err.message
    assert (await bob.request(PrekeyCount)).count == 5  # nothing consumed
    old = await relay.login("carol", version=1)
    assert (await old.request(FetchBundle, user="bob")).bundle.version == 1


async def test_kem_prekeys_need_version_2_and_the_right_size(relay):
    old = await relay.login("bob", version=1)
    await expect_error(
        ErrorCode.BAD_REQUEST,
        old.request(
            PublishKeys,
            identity=identity(2),
            signed_prekey=spk(2),
            one_time_prekeys=(),
            kem_last_resort=kem(900),
        ),
    )
    new = await relay.login("carol", version=2)
    short = KemPrekey(1, b"k" * 1183, b"s" * 64)
    await expect_error(
        ErrorCode.BAD_KEYS,
        new.request(
            PublishKeys,
            identity=identity(3),
            signed_prekey=spk(3),
            one_time_prekeys=(),
            one_time_kem_prekeys=(short,),
        ),
    )


async def test_republishing_over_version_1_drops_the_kem_prekeys(relay):
    """A user back on a version-1 client: version-2 fetchers get a typed answer, not a
    bundle whose KEM keys the user's client no longer holds."""
    bob = await relay.login("bob", version=2)
    await publish_v2(bob)
    back = await relay.login("bob", version=1)
    await back.request(PublishKeys, identity=identity(2), signed_prekey=None, one_time_prekeys=())
    login = await (await relay.connect()).handshake("bob", relay.tokens["bob"], versions=(1,))
    assert (login.key_version, login.kem_prekeys_left) == (1, 0)
    alice = await relay.login("alice", version=2)
    await expect_error(ErrorCode.UNSUPPORTED_VERSION, alice.request(FetchBundle, user="bob"))
