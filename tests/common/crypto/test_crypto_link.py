"""The link exchange: a relay in the middle, wrong, expired and reused codes."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.common.crypto.devices import first_device_list, verify_device_list
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.link import LinkCode, LinkJoiner, LinkOffer, channel_of
from hushwire.common.errors import (
    DecryptionError,
    InvalidKey,
    LinkError,
    LinkExpired,
    LinkUsed,
)

T0 = 1_780_000_000.0
TTL = 300.0


class Account:
    """Alice's existing device: her identity and her signed one-device list."""

    def __init__(self, group):
        self.group = group
        self.identity = IdentityKeyPair.generate(group)
        self.dlist = first_device_list("alice", group.name, "laptop", self.identity.dh.public, 1)

    def grant(self, offer, request, now=T0):
        new, device = self.dlist.with_device(request.name, request.dh_key, int(now))
        return offer.seal_grant(self.identity, device.id, new.sign(self.identity))


@pytest.fixture
def alice(group):
    return Account(group)


def _joiner(group, code, name="phone"):
    return LinkJoiner(group, code, name, group.generate())


def test_the_new_device_gets_the_identity_and_a_list_naming_it(alice, group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    joiner = _joiner(group, LinkCode.parse(offer.code.text()))
    n_pub, sealed = joiner.request(offer.ephemeral)
    request = offer.open_request(n_pub, sealed, now=T0 + 10)
    assert request.name == "phone" and request.dh_key == joiner.dh.public
    grant = joiner.open_grant(alice.grant(offer, request))
    assert grant.account == "alice"
    assert grant.identity.sign_key == alice.identity.sign_key
    assert grant.identity.dh.public == joiner.dh.public
    assert (grant.device.id, grant.device.name) == (2, "phone")
    assert grant.device_list.version == 2
    # What the new device publishes verifies for its peers under the one account identity.
    verify_device_list(
        grant.signed_list, account="alice", identity=grant.identity.public(), group=group
    )


def test_the_code_text_round_trips_and_forgives_case_and_spacing(group):
    code = LinkOffer(group, now=T0, ttl=TTL).code
    text = code.text()
    assert text.startswith("hw1-")
    assert LinkCode.parse(text) == code
    assert LinkCode.parse(" " + text.upper().replace("-", " ") + "\n") == code
    for bad in ("", "hw2-" + text[4:], text[:-4], text + "aaaa", text[:-1] + "1"):
        with pytest.raises(LinkError):
            LinkCode.parse(bad)


def test_the_code_carries_the_relay_certificate_pin(group):
    pin = bytes(range(32))
    code = LinkOffer(group, now=T0, ttl=TTL, pin=pin).code
    parsed = LinkCode.parse(code.text())
    assert parsed == code and parsed.pin == pin
    assert parsed.fingerprint() == ":".join(f"{b:02X}" for b in pin)
    # A code without a pin (an older client's) still reads, and says it has none.
    bare = LinkCode.parse(LinkCode(code.channel, code.secret).text())
    assert (bare.pin, bare.fingerprint()) == (None, None)
    # Anything between the two lengths, or a pin cut short, is a typo.
    for cut in (4, 8, 20):
        with pytest.raises(LinkError):
            LinkCode.parse(code.text()[:-cut])


def test_the_channel_commits_to_the_ephemeral_key(group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    assert offer.code.channel == channel_of(group, offer.ephemeral)
    assert offer.code.channel != channel_of(group, group.generate().public)


def test_a_relay_substituting_its_own_ephemeral_key_is_detected(group):
    """The relay answers link_fetch with its own key: the code's hash does not match."""
    offer = LinkOffer(group, now=T0, ttl=TTL)
    joiner = _joiner(group, offer.code)
    with pytest.raises(LinkError, match="does not match"):
        joiner.request(group.generate().public)


def test_a_relay_substituting_its_own_request_is_rejected(alice, group):
    """The relay knows the channel and e (not the secret): its request does not open, and
    the failed attempt does not burn the code for the real device."""
    offer = LinkOffer(group, now=T0, ttl=TTL)
    guessed = LinkCode(offer.code.channel, bytes(16))
    forged_n, forged = _joiner(group, guessed, "relay").request(offer.ephemeral)
    with pytest.raises(DecryptionError):
        offer.open_request(forged_n, forged, now=T0 + 1)
    joiner = _joiner(group, offer.code)
    n_pub, sealed = joiner.request(offer.ephemeral)
    # The relay swaps only the new device's ephemeral key: the AEAD key changes.
    with pytest.raises(DecryptionError):
        offer.open_request(group.generate().public, sealed, now=T0 + 2)
    assert offer.open_request(n_pub, sealed, now=T0 + 3).name == "phone"


def test_every_bit_flip_of_the_request_and_grant_is_rejected(alice, group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    joiner = _joiner(group, offer.code)
    n_pub, sealed = joiner.request(offer.ephemeral)
    for bit in range(0, len(sealed) * 8, 5):
        flipped = bytearray(sealed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            offer.open_request(n_pub, bytes(flipped), now=T0)
    grant = alice.grant(offer, offer.open_request(n_pub, sealed, now=T0))
    for bit in range(0, len(grant) * 8, 97):
        flipped = bytearray(grant)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            joiner.open_grant(bytes(flipped))
    assert joiner.open_grant(grant).device.id == 2


def test_a_wrong_code_fails(alice, group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    wrong_secret = LinkCode(offer.code.channel, bytes(b ^ 1 for b in offer.code.secret))
    n_pub, sealed = _joiner(group, wrong_secret).request(offer.ephemeral)
    with pytest.raises(DecryptionError):
        offer.open_request(n_pub, sealed, now=T0)
    wrong_channel = LinkCode(bytes(16), offer.code.secret)
    with pytest.raises(LinkError):
        _joiner(group, wrong_channel).request(offer.ephemeral)


def test_an_expired_code_is_refused(group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    n_pub, sealed = _joiner(group, offer.code).request(offer.ephemeral)
    with pytest.raises(LinkExpired):
        offer.open_request(n_pub, sealed, now=T0 + TTL)
    # Just before the expiry the same request is still good.
    assert offer.open_request(n_pub, sealed, now=T0 + TTL - 1).name == "phone"


def test_a_code_is_used_once(alice, group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    joiner = _joiner(group, offer.code)
    n_pub, sealed = joiner.request(offer.ephemeral)
    request = offer.open_request(n_pub, sealed, now=T0)
    second = _joiner(group, offer.code, "tablet")
    n2, sealed2 = second.request(offer.ephemeral)
    with pytest.raises(LinkUsed):
        offer.open_request(n2, sealed2, now=T0 + 1)
    with pytest.raises(LinkUsed):
        offer.open_request(n_pub, sealed, now=T0 + 1)  # a replay of the accepted one
    grant = alice.grant(offer, request)
    with pytest.raises(LinkError):
        alice.grant(offer, request)  # one grant per code
    joiner.open_grant(grant)
    with pytest.raises(LinkError):
        joiner.open_grant(grant)


def test_a_grant_whose_list_does_not_name_the_device_is_refused(alice, group):
    """A compromised old device (or a bug) cannot hand over a list without the new key."""
    offer = LinkOffer(group, now=T0, ttl=TTL)
    joiner = _joiner(group, offer.code)
    request = offer.open_request(*joiner.request(offer.ephemeral), now=T0)
    other, device = alice.dlist.with_device("phone", group.generate().public, int(T0))
    sealed = offer.seal_grant(alice.identity, device.id, other.sign(alice.identity))
    assert request.name == "phone"
    with pytest.raises(LinkError, match="does not name"):
        joiner.open_grant(sealed)


def test_a_grant_whose_list_is_signed_by_another_identity_is_refused(alice, group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    joiner = _joiner(group, offer.code)
    request = offer.open_request(*joiner.request(offer.ephemeral), now=T0)
    new, device = alice.dlist.with_device(request.name, request.dh_key, int(T0))
    mallory = IdentityKeyPair.generate(group)
    sealed = offer.seal_grant(alice.identity, device.id, new.sign(mallory))
    with pytest.raises(LinkError, match="not valid"):
        joiner.open_grant(sealed)


def test_an_invalid_ephemeral_key_is_refused(group):
    offer = LinkOffer(group, now=T0, ttl=TTL)
    bad = bytes(len(offer.ephemeral))
    with pytest.raises(InvalidKey):
        offer.open_request(bad, b"\x00" * 40, now=T0)
    joiner = _joiner(group, dataclasses.replace(offer.code, channel=channel_of(group, bad)))
    with pytest.raises(InvalidKey):
        joiner.request(bad)
