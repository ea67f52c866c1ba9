"""Safe-prime generation (small sizes), PEM round trips and the loader's checks."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sympy.ntheory import isprime

from hushwire.common.crypto import dh, dhparams
from hushwire.common.crypto.dh import FFDHE3072, MIN_P_BITS, FiniteFieldGroup
from hushwire.common.errors import InvalidKey

from .conftest import DH2048_PEM


def test_generates_a_small_safe_prime_group_with_progress():
    calls: list[tuple[int, float]] = []
    group = dhparams._generate_group(
        256, workers=2, progress=lambda n, e: calls.append((n, e)), min_bits=256
    )
    assert group.p.bit_length() == 256
    assert isprime(group.p) and isprime(group.q)
    assert group.p % 24 == 23 and pow(2, group.q, group.p) == 1
    assert calls, "progress was never reported"
    attempts = [n for n, _ in calls]
    assert attempts == sorted(attempts) and attempts[-1] > 0
    assert calls[0][1] == pytest.approx(dhparams.expected_attempts(256))


def test_expected_attempts_grows_with_size():
    assert 3000 < dhparams.expected_attempts(256) < 5000  # measured mean ~3,950
    assert dhparams.expected_attempts(3072) > 100 * dhparams.expected_attempts(256)


def test_public_generator_keeps_the_floor():
    with pytest.raises(ValueError):
        dhparams.generate_safe_prime_group(1024, workers=1)


def test_pem_round_trip():
    pem = dh.to_pem(FFDHE3072)
    assert pem.startswith("-----BEGIN DH PARAMETERS-----\n")
    assert pem.rstrip().endswith("-----END DH PARAMETERS-----")
    loaded = dh.load_pem(pem)
    assert (loaded.p, loaded.g) == (FFDHE3072.p, FFDHE3072.g)


def test_loads_openssl_generated_parameters():
    group = dh.load_pem(DH2048_PEM.read_text())
    assert group.p.bit_length() == 2048
    a, b = group.generate(), group.generate()
    assert group.agree(a.private, b.public) == group.agree(b.private, a.public)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_openssl_accepts_our_pem(tmp_path):
    path = tmp_path / "params.pem"
    path.write_text(dh.to_pem(FFDHE3072))
    out = subprocess.run(
        ["openssl", "pkeyparam", "-in", str(path), "-check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_loader_rejects_small_groups():
    small = dhparams._generate_group(256, workers=1, progress=None, min_bits=256)
    pem = dh.to_pem(small)
    with pytest.raises(InvalidKey):
        dh.load_pem(pem)
    assert dh.load_pem(pem, min_bits=256).p == small.p
    assert MIN_P_BITS == 2048


def test_loader_rejects_bad_parameters():
    p = FFDHE3072.p
    with pytest.raises(InvalidKey):  # not prime
        dh.load_pem(dh.to_pem(FiniteFieldGroup("x", p + 2, 2)))
    with pytest.raises(InvalidKey):  # g outside the order-q subgroup
        dh.load_pem(dh.to_pem(FiniteFieldGroup("x", p, p - 2)))
    with pytest.raises(InvalidKey):
        dh.load_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InvalidKey):
        dh.load_pem("not pem")
    with pytest.raises(InvalidKey):
        dh.load_der(b"\x30\x03\x02\x01\x05")
