"""client/prekeys.py: what a device publishes and keeps, through the session managers of
tests/client/conftest.py (an in-memory key directory in place of the relay)."""

from __future__ import annotations

from hushwire.client.prekeys import (
    PREKEY_LOW,
    PREKEY_TARGET,
    SIGNED_PREKEY_GRACE_MS,
    SIGNED_PREKEY_ROTATE_MS,
)
from tests.client.conftest import send


async def test_prekey_top_up_and_signed_prekey_rotation(make, directory, clock):
    bob = await make("bob")
    assert (
        await bob.keys.plan_upload(
            relay_has_identity=True,
            prekeys_left=PREKEY_LOW,
            kem_prekeys_left=PREKEY_LOW,
            key_version=2,
        )
        is None
    )
    top = await bob.keys.plan_upload(
        relay_has_identity=True,
        prekeys_left=PREKEY_LOW - 1,
        kem_prekeys_left=PREKEY_LOW - 1,
        key_version=2,
    )
    assert top.identity is None and top.signed_prekey is None
    assert len(top.one_time_prekeys) == PREKEY_TARGET - PREKEY_LOW + 1
    first_spk = directory.uploads["bob"].signed_prekey.id
    clock.now += SIGNED_PREKEY_ROTATE_MS / 1000
    rot = await bob.keys.plan_upload(
        relay_has_identity=True, prekeys_left=50, kem_prekeys_left=50, key_version=2
    )
    assert rot.signed_prekey is not None and rot.signed_prekey.id != first_spk
    await bob.keys.upload_done(rot)
    # The previous signed prekey stays for the grace period, then goes.
    ids = [pid for pid, *_ in await bob.store.signed_prekeys()]
    assert ids == [first_spk, rot.signed_prekey.id]
    clock.now += SIGNED_PREKEY_GRACE_MS / 1000 + 1
    rot2 = await bob.keys.plan_upload(
        relay_has_identity=True, prekeys_left=50, kem_prekeys_left=50, key_version=2
    )
    await bob.keys.upload_done(rot2)
    assert first_spk not in [pid for pid, *_ in await bob.store.signed_prekeys()]
    # Relay lost our keys (has_identity False): publish everything again.
    again = await bob.keys.plan_upload(
        relay_has_identity=False, prekeys_left=0, kem_prekeys_left=0, key_version=2
    )
    assert again.identity == bob.identity.public() and len(again.one_time_prekeys) == 100


async def test_initial_message_for_a_rotated_prekey_within_grace(make, directory, clock):
    alice, bob = await make("alice"), await make("bob")
    in_flight = await send(alice, "bob", "sent before rotation", directory)
    clock.now += SIGNED_PREKEY_ROTATE_MS / 1000
    rot = await bob.keys.plan_upload(
        relay_has_identity=True, prekeys_left=99, kem_prekeys_left=99, key_version=2
    )
    await bob.keys.upload_done(rot)
    assert (await bob.receive(in_flight)).text == "sent before rotation"


async def test_a_profile_from_before_version_2_publishes_its_kem_prekeys(make):
    bob = await make("bob")
    upgrade = await bob.keys.plan_upload(
        relay_has_identity=True, prekeys_left=100, kem_prekeys_left=0, key_version=1
    )
    assert upgrade.identity == bob.identity.public()
    assert upgrade.kem_last_resort is not None
    assert len(upgrade.one_time_kem_prekeys) == PREKEY_TARGET
