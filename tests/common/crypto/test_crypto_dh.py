"""DH groups: validation of public values, parameters, private keys and the registry."""

from __future__ import annotations

import secrets

import pytest

from hushwire.common.crypto import dh, dhparams
from hushwire.common.crypto.dh import (
    FFDHE3072,
    MIN_EXPONENT_BITS,
    X25519,
    FiniteFieldGroup,
    custom_group_name,
    exponent_bits_for,
    group_by_name,
    params_der,
)
from hushwire.common.errors import InvalidKey

from .conftest import DH2048_PEM

P25519 = 2**255 - 19


def test_agreement_is_symmetric(group):
    a, b = group.generate(), group.generate()
    shared = group.agree(a.private, b.public)
    assert shared == group.agree(b.private, a.public)
    assert len(shared) == group.public_size
    assert len(a.public) == group.public_size


def test_private_key_round_trip(group):
    pair = group.generate()
    assert group.keypair_from_private(group.private_to_bytes(pair)) == pair


def test_keypair_repr_hides_the_private_key(group):
    pair = group.generate()
    assert pair.private.hex() not in repr(pair)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x01" * 33])
def test_x25519_wrong_length_rejected(bad):
    with pytest.raises(InvalidKey):
        X25519.decode_public(bad)


def test_x25519_non_canonical_encodings_rejected():
    honest = X25519.generate()
    u = int.from_bytes(honest.public, "little")
    high_bit = (u | (1 << 255)).to_bytes(32, "little")
    with pytest.raises(InvalidKey):
        X25519.agree(honest.private, high_bit)
    # u + p names the same point as u when u + p < 2^255 (u = 1..18): non-canonical.
    for small in (9, 2**255 - 20 - P25519 + P25519):
        if small + P25519 < 2**255:
            with pytest.raises(InvalidKey):
                X25519.decode_public((small + P25519).to_bytes(32, "little"))
    assert X25519.decode_public(honest.public) is not None


@pytest.mark.parametrize(
    "u",
    [
        0,
        1,
        P25519 - 1,
        # The order-8 points (RFC 7748 / libsodium blacklist).
        0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
        0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
    ],
)
def test_x25519_low_order_points_rejected(u):
    with pytest.raises(InvalidKey):
        X25519.agree(X25519.generate().private, u.to_bytes(32, "little"))


def test_ffdhe3072_parameters_are_a_valid_safe_prime_group():
    checked = FiniteFieldGroup.from_params(FFDHE3072.p, FFDHE3072.g, name="ffdhe3072")
    assert checked.name == "ffdhe3072"
    assert FFDHE3072.p.bit_length() == 3072
    assert FFDHE3072.public_size == 384


@pytest.mark.parametrize("label", ["0", "1", "p-1", "p", "p+1", "non-subgroup", "too-long"])
def test_ff_invalid_elements_rejected(label):
    p = FFDHE3072.p
    value = {
        "0": 0,
        "1": 1,
        "p-1": p - 1,
        "p": p,
        "p+1": p + 1,
        # -2 is a non-residue (p = 7 mod 8 makes 2 a residue and -1 a non-residue), so it
        # lies outside the order-q subgroup.
        "non-subgroup": p - 2,
        "too-long": 5,
    }[label]
    size = FFDHE3072.public_size + (1 if label == "too-long" else 0)
    encoded = value.to_bytes(size, "big") if value < 256**size else b"\xff" * size
    with pytest.raises(InvalidKey):
        FFDHE3072.decode_public(encoded)
    with pytest.raises(InvalidKey):
        FFDHE3072.agree(FFDHE3072.generate().private, encoded)


def test_ff_subgroup_check_equals_euler_criterion():
    p, q = FFDHE3072.p, FFDHE3072.q
    samples = [secrets.randbelow(p - 3) + 2 for _ in range(6)] + [2, 3, p - 2, p - 3]
    for y in samples:
        inside = pow(y, q, p) == 1
        encoded = y.to_bytes(FFDHE3072.public_size, "big")
        if inside:
            assert FFDHE3072.decode_public(encoded) == y
        else:
            with pytest.raises(InvalidKey):
                FFDHE3072.decode_public(encoded)
    assert any(pow(y, q, p) != 1 for y in samples)


def test_ff_exponent_size_follows_rfc7919():
    assert FFDHE3072.exponent_bits == 275  # RFC 7919 A.2
    assert exponent_bits_for(2048) == MIN_EXPONENT_BITS  # RFC says 225: floor is 256
    assert exponent_bits_for(4096) == 325
    assert exponent_bits_for(8192) == 400
    x = int.from_bytes(FFDHE3072.generate().private, "big")
    assert 1 < x < 2**275


@pytest.mark.parametrize(
    "private", [b"\x00" * 35, b"\x00" * 34 + b"\x01", b"\xff" * 34, b"\x01" * 36]
)
def test_ff_bad_private_keys_rejected(private):
    with pytest.raises(InvalidKey):
        FFDHE3072.keypair_from_private(private)


def test_x25519_bad_private_key_rejected():
    with pytest.raises(InvalidKey):
        X25519.keypair_from_private(b"\x01" * 31)


def test_custom_group_validation():
    small = dhparams.find_safe_prime(256, workers=1)
    ok = FiniteFieldGroup.from_params(small, 2, min_bits=256)
    assert ok.name == custom_group_name(small, 2)
    with pytest.raises(InvalidKey):  # the real floor
        FiniteFieldGroup.from_params(small, 2)
    with pytest.raises(InvalidKey):  # p not a safe prime
        FiniteFieldGroup.from_params(small + 2, 2, min_bits=256)
    with pytest.raises(InvalidKey):  # g = p - 1 has order 2
        FiniteFieldGroup.from_params(small, small - 1, min_bits=256)
    with pytest.raises(InvalidKey):  # a non-residue generates the whole group, order 2q
        FiniteFieldGroup.from_params(small, small - 2, min_bits=256)
    with pytest.raises(InvalidKey):
        FiniteFieldGroup.from_params(small, 2, name="ffdhe3072-fake", min_bits=256)
    with pytest.raises(InvalidKey):  # a built-in name cannot be borrowed
        FiniteFieldGroup.from_params(small, 2, name="ffdhe3072", min_bits=256)
    a, b = ok.generate(), ok.generate()
    assert ok.agree(a.private, b.public) == ok.agree(b.private, a.public)


def test_group_registry():
    assert group_by_name("x25519") is X25519
    assert group_by_name("ffdhe3072") is FFDHE3072
    with pytest.raises(InvalidKey):
        group_by_name("ffdh2048-0000000000000000")
    with pytest.raises(InvalidKey):
        group_by_name("nope", params=(FFDHE3072.p, FFDHE3072.g))


def test_group_registry_accepts_custom_pem_and_remembers_it():
    pem = DH2048_PEM.read_text()
    group = dh.load_pem(pem)
    assert group.name.startswith("ffdh2048-")
    assert group_by_name(group.name, pem) == group
    assert group_by_name(group.name) == group
    assert group_by_name(group.name, (group.p, group.g)) == group
    assert group_by_name(group.name, params_der(group.p, group.g)) == group
