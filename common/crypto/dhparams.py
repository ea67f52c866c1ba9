"""Operator-generated finite-field groups: the safe-prime search behind `dhparams`.

`generate_safe_prime_group` looks for p = 2q + 1 with p and q prime, as `openssl
dhparam` does, using every core: each worker draws random q with q = 11 (mod 12), so
p = 23 (mod 24) and g = 2 generates the subgroup of order q (2 is a quadratic residue
mod p when p = +-1 (mod 8)); candidates with a small factor in q or p are dropped by one
gcd with a primorial before sympy's BPSW `isprime` runs.

Progress is reported as (attempts so far, expected attempts). The expectation comes
from the Hardy-Littlewood estimate for Sophie Germain primes, 2*C2 / (ln q * ln 2q) per
integer near q, of which half lie in the class q = 11 (mod 12), giving
ln q * ln 2q / (12 * C2) candidates from that class on average (C2 = 0.66016, the twin
prime constant). It is a mean, not a bound: a run can take several times as long.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import secrets
from collections.abc import Callable
from typing import Final

from sympy import primerange
from sympy.ntheory import isprime

from hushwire.common.crypto.dh import MIN_P_BITS, FiniteFieldGroup

GENERATOR: Final = 2
TWIN_PRIME_CONSTANT: Final = 0.6601618158468696
_SIEVE_LIMIT: Final = 1 << 14
_BATCH: Final = 64  # candidates per task: small enough for a smooth progress bar

Progress = Callable[[int, float], None]

_primorial: int | None = None


def _sieve_product() -> int:
    global _primorial  # computed once per worker process
    if _primorial is None:
        _primorial = math.prod(primerange(3, _SIEVE_LIMIT))
    return _primorial


def expected_attempts(bits: int) -> float:
    """Mean number of candidates q = 11 (mod 12) tried before a safe prime of `bits` bits."""
    ln_q = (bits - 1.5) * math.log(2)  # q is drawn from [2^(bits-2), 2^(bits-1))
    return ln_q * (ln_q + math.log(2)) / (12 * TWIN_PRIME_CONSTANT)


def _search(bits: int, count: int) -> tuple[int | None, int]:
    """Try `count` random candidates; (p, tries) on success, (None, count) otherwise."""
    sieve = _sieve_product()
    top = 1 << (bits - 2)
    for tried in range(1, count + 1):
        q = secrets.randbits(bits - 2) | top
        q += (11 - q) % 12  # q = 11 (mod 12): neither q nor 2q + 1 divisible by 2 or 3
        p = 2 * q + 1
        if p.bit_length() != bits or math.gcd(q, sieve) != 1 or math.gcd(p, sieve) != 1:
            continue
        if isprime(q) and isprime(p):
            return p, tried
    return None, count


def find_safe_prime(
    bits: int, *, workers: int | None = None, progress: Progress | None = None
) -> int:
    """A random safe prime of exactly `bits` bits with p = 23 (mod 24), on all cores.

    No size floor here (tests use small sizes); callers that make groups enforce it.
    """
    if bits < 16:
        raise ValueError("bits must be at least 16")
    workers = workers or os.cpu_count() or 1
    expected = expected_attempts(bits)
    results: queue.SimpleQueue[object] = queue.SimpleQueue()
    attempts = 0
    # fork where available: spawn would re-run the caller's __main__ module in every
    # worker; the admin CLI that calls this is single-threaded, so forking is safe.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers) as pool:

        def submit() -> None:
            pool.apply_async(
                _search, (bits, _BATCH), callback=results.put, error_callback=results.put
            )

        for _ in range(2 * workers):
            submit()
        while True:
            outcome = results.get()
            if isinstance(outcome, BaseException):
                raise outcome
            if not isinstance(outcome, tuple):
                raise TypeError("unexpected worker result")
            found, tried = outcome
            attempts += tried
            if progress is not None:
                progress(attempts, expected)
            if found is not None:
                pool.terminate()
                return found
            submit()


def _generate_group(
    bits: int, *, workers: int | None, progress: Progress | None, min_bits: int
) -> FiniteFieldGroup:
    if bits < min_bits:
        raise ValueError(f"a DH group needs at least {min_bits} bits")
    p = find_safe_prime(bits, workers=workers, progress=progress)
    return FiniteFieldGroup.from_params(p, GENERATOR, min_bits=min_bits)


def generate_safe_prime_group(
    bits: int, *, workers: int | None = None, progress: Progress | None = None
) -> FiniteFieldGroup:
    """A new safe-prime group of `bits` bits (>= 2048), validated like a loaded one.

    `workers` defaults to every core; `progress(attempts, expected)` is called after
    each batch from this process, so a CLI can draw a bar. Takes minutes for 3072 bits.
    """
    return _generate_group(bits, workers=workers, progress=progress, min_bits=MIN_P_BITS)
