"""Diffie-Hellman groups behind one small interface: X25519 and finite-field groups.

X3DH and the Double Ratchet only need "generate a key pair", "check a peer's public
value" and "agree on a shared secret", so each group implements exactly that
(`DHGroup`). Private keys travel as bytes inside a `DHKeyPair`, so states serialise
without knowing which group they use.

Decisions (docs/security.md, "Cryptography", says the same):

* X25519 (RFC 7748) is the default. Public values must be canonical: the top bit of the
  last byte clear and u < 2^255 - 19, i.e. the 32 bytes must be exactly what an honest
  implementation emits. RFC 7748 5 lets a receiver mask the top bit and reduce mod p,
  which makes several byte strings name one key; hushwire never produces such encodings,
  and rejecting them keeps "same bytes" == "same key" for safety numbers and AD, as
  libsignal does for high-bit base keys. Low-order points and an all-zero shared secret
  (a non-contributory result, RFC 7748 6.1) are rejected.
* Finite-field groups are safe-prime groups p = 2q + 1 with g generating the subgroup
  of prime order q: RFC 7919 ffdhe3072 built in, or an operator's own group (from
  `dhparams`), whose parameters are checked with sympy when loaded. Public values must
  satisfy 1 < y < p - 1 and y^q = 1 (mod p) (NIST SP 800-56A rev3 5.6.2.3.1).

Parameter files use PKCS#3 DHParameter, SEQUENCE { INTEGER p, INTEGER g [, INTEGER
privateValueLength] }, under "-----BEGIN DH PARAMETERS-----", as OpenSSL writes them.
A privateValueLength is ignored: hushwire picks its own exponent size. Generating a
new group lives in `dhparams` (the only place that needs multiprocessing).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Final

from Crypto.IO import PEM
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.PublicKey import ECC
from Crypto.Util.asn1 import DerSequence

from hushwire.common.crypto.primitives import OS_RANDOM, Random, ct_equal
from hushwire.common.errors import InvalidKey

MIN_P_BITS: Final = 2048
"""Smallest modulus accepted for a finite-field group (NIST SP 800-56A rev3: 112 bits)."""

MIN_EXPONENT_BITS: Final = 256
"""Floor for private exponents: twice the 128-bit target strength (SP 800-56A 5.6.1.1.1)."""

# RFC 7919 appendix A: the shortest private exponent each group size should use
# ("should choose a secret key of at least N bits"); applied to custom groups too,
# by the largest size not above the modulus.
_RFC7919_EXPONENT_BITS: Final = ((8192, 400), (6144, 375), (4096, 325), (3072, 275), (2048, 225))

_X25519_P: Final = 2**255 - 19


@dataclass(frozen=True, slots=True)
class DHKeyPair:
    """A private key (group-specific bytes) and its encoded public value."""

    private: bytes = field(repr=False)
    public: bytes


class DHGroup(ABC):
    """What X3DH and the Double Ratchet need from a Diffie-Hellman group."""

    name: str
    public_size: int

    @property
    def kdf_prefix(self) -> bytes:
        """X3DH 2.2's F: 0xFF bytes, one encoded public value long.

        For X25519 this is exactly the spec's 32 0xFF bytes. For finite-field groups the
        spec defines nothing; len(p) 0xFF bytes is the same idea (an all-ones value that
        is never a valid encoded element, since it exceeds p), so F || KM cannot equal
        any DH output string.
        """
        return b"\xff" * self.public_size

    @abstractmethod
    def generate(self, rand: Random = OS_RANDOM) -> DHKeyPair:
        """A fresh key pair from `rand` (the OS CSPRNG unless a test scripts it)."""

    @abstractmethod
    def decode_public(self, data: bytes) -> object:
        """Parse and validate a peer's public value; InvalidKey if it is not acceptable."""

    @abstractmethod
    def agree(self, private: bytes, public: bytes) -> bytes:
        """DH(private, public) as fixed-length bytes; InvalidKey for a bad peer value."""

    @abstractmethod
    def keypair_from_private(self, private: bytes) -> DHKeyPair:
        """Rebuild a key pair from its serialised private key (validated)."""

    def check_public(self, data: bytes) -> bytes:
        """Validate `data` as a public value and return it unchanged."""
        self.decode_public(data)
        return data

    def private_to_bytes(self, pair: DHKeyPair) -> bytes:
        """The private key's serialised form (for local, encrypted storage only)."""
        return pair.private

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DHGroup) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class X25519Group(DHGroup):
    """X25519 (RFC 7748) with canonical-encoding and contributory-result checks."""

    name = "x25519"
    public_size = 32

    def generate(self, rand: Random = OS_RANDOM) -> DHKeyPair:
        # The private key is 32 random bytes, clamped by X25519 itself (RFC 7748 5).
        key = ECC.generate(curve="Curve25519", randfunc=rand)
        return DHKeyPair(private=key.seed, public=key.public_key().export_key(format="raw"))

    def decode_public(self, data: bytes) -> object:
        if not isinstance(data, bytes) or len(data) != 32:
            raise InvalidKey("X25519 public key must be 32 bytes")
        # Canonical only: top bit clear and u < p (see the module docstring).
        if data[31] & 0x80 or int.from_bytes(data, "little") >= _X25519_P:
            raise InvalidKey("non-canonical X25519 public key")
        try:
            # pycryptodome rejects the low-order points here.
            return import_x25519_public_key(data)
        except ValueError:
            raise InvalidKey("low-order X25519 public key") from None

    def agree(self, private: bytes, public: bytes) -> bytes:
        peer = self.decode_public(public)
        try:
            own = import_x25519_private_key(private)
            shared = key_agreement(static_priv=own, static_pub=peer, kdf=bytes)
        except (ValueError, TypeError):
            raise InvalidKey("X25519 agreement failed") from None
        # RFC 7748 6.1: an all-zero output means the peer forced a non-contributory key.
        if ct_equal(shared, bytes(32)):
            raise InvalidKey("X25519 shared secret is all zero")
        return shared

    def keypair_from_private(self, private: bytes) -> DHKeyPair:
        if not isinstance(private, bytes) or len(private) != 32:
            raise InvalidKey("X25519 private key must be 32 bytes")
        key = import_x25519_private_key(private)
        return DHKeyPair(private=private, public=key.public_key().export_key(format="raw"))


def exponent_bits_for(p_bits: int) -> int:
    """Private exponent size for a modulus: RFC 7919 appendix A, floor MIN_EXPONENT_BITS."""
    for size, bits in _RFC7919_EXPONENT_BITS:
        if p_bits >= size:
            return max(bits, MIN_EXPONENT_BITS)
    return MIN_EXPONENT_BITS


def params_der(p: int, g: int) -> bytes:
    """PKCS#3 DHParameter DER: SEQUENCE { INTEGER p, INTEGER g }."""
    return DerSequence([p, g]).encode()


class FiniteFieldGroup(DHGroup):
    """A safe-prime group: p = 2q + 1, q prime, g of order q, fixed-length encodings."""

    __slots__ = ("exponent_bits", "g", "name", "p", "private_size", "public_size", "q")

    def __init__(self, name: str, p: int, g: int) -> None:
        """Use `from_params` for untrusted parameters; this constructor checks nothing."""
        self.name = name
        self.p = p
        self.g = g
        self.q = (p - 1) // 2
        self.public_size = (p.bit_length() + 7) // 8
        # Below q always (only binds for toy test groups: real ones have p >= 2048 bits).
        self.exponent_bits = min(exponent_bits_for(p.bit_length()), self.q.bit_length() - 1)
        self.private_size = (self.exponent_bits + 7) // 8

    @classmethod
    def from_params(
        cls, p: int, g: int, *, name: str | None = None, min_bits: int = MIN_P_BITS
    ) -> FiniteFieldGroup:
        """A validated group: p and q = (p-1)/2 prime (sympy), g of order q, p large enough.

        The name is derived from the parameters, so a group name in a signed bundle
        commits to p and g.
        """
        from sympy.ntheory import isprime  # sympy costs 0.4 s and ~38 MB: custom groups only

        if not isinstance(p, int) or not isinstance(g, int):
            raise InvalidKey("group parameters must be integers")
        if p.bit_length() < min_bits:
            raise InvalidKey(f"modulus has {p.bit_length()} bits, at least {min_bits} needed")
        if p % 2 == 0 or not isprime((p - 1) // 2) or not isprime(p):
            raise InvalidKey("p is not a safe prime")
        if not 1 < g < p - 1 or pow(g, (p - 1) // 2, p) != 1:
            raise InvalidKey("g does not generate the subgroup of order (p-1)/2")
        expected = custom_group_name(p, g)
        builtin = _BUILTIN.get(name or "")
        if isinstance(builtin, FiniteFieldGroup) and (builtin.p, builtin.g) == (p, g):
            expected = builtin.name
        if name is not None and name != expected:
            raise InvalidKey(f"group name {name!r} does not match its parameters")
        return cls(expected, p, g)

    def generate(self, rand: Random = OS_RANDOM) -> DHKeyPair:
        # Uniform in [2, 2^N): a short exponent as RFC 7919 5.2 allows; N >= 2 * 128.
        # Rejection sampling over N-bit draws keeps it exactly uniform.
        x = 0
        while x < 2:
            raw = int.from_bytes(rand(self.private_size), "big")
            x = raw & ((1 << self.exponent_bits) - 1)
        return DHKeyPair(
            private=self._encode_private(x), public=self._encode(pow(self.g, x, self.p))
        )

    def _encode(self, value: int) -> bytes:
        return value.to_bytes(self.public_size, "big")

    def _encode_private(self, x: int) -> bytes:
        return x.to_bytes(self.private_size, "big")

    def _decode_private(self, private: bytes) -> int:
        if not isinstance(private, bytes) or len(private) != self.private_size:
            raise InvalidKey(f"{self.name} private key must be {self.private_size} bytes")
        x = int.from_bytes(private, "big")
        if not 1 < x < self.q:
            raise InvalidKey("private exponent out of range")
        return x

    def decode_public(self, data: bytes) -> int:
        if not isinstance(data, bytes) or len(data) != self.public_size:
            raise InvalidKey(f"{self.name} public value must be {self.public_size} bytes")
        y = int.from_bytes(data, "big")
        if not 1 < y < self.p - 1:
            raise InvalidKey("public value out of range (need 1 < y < p-1)")
        # SP 800-56A 5.6.2.3.1 asks for y^q == 1 (mod p). For prime p, q = (p-1)/2, that
        # is Euler's criterion, i.e. exactly the Legendre symbol (y/p) == 1; sympy's
        # Jacobi symbol computes it in ~0.2 ms instead of a 60 ms full-size modexp.
        from sympy import jacobi_symbol  # see from_params

        if jacobi_symbol(y, self.p) != 1:
            raise InvalidKey("public value is not in the prime-order subgroup")
        return y

    def agree(self, private: bytes, public: bytes) -> bytes:
        y = self.decode_public(public)
        x = self._decode_private(private)
        z = pow(y, x, self.p)
        # Cannot happen for a validated y and 1 < x < q, but never return a trivial key.
        if z in (0, 1, self.p - 1):
            raise InvalidKey("degenerate shared secret")
        # Fixed length, leading zeros kept (as TLS 1.3, RFC 8446 7.4.1).
        return self._encode(z)

    def keypair_from_private(self, private: bytes) -> DHKeyPair:
        x = self._decode_private(private)
        return DHKeyPair(private=private, public=self._encode(pow(self.g, x, self.p)))


def custom_group_name(p: int, g: int) -> str:
    """`ffdh<bits>-<16 hex>`: the bit size and a SHA-256 prefix of the PKCS#3 DER."""
    digest = hashlib.sha256(params_der(p, g)).hexdigest()[:16]
    return f"ffdh{p.bit_length()}-{digest}"


# RFC 7919 appendix A.2, ffdhe3072 (g = 2).
_FFDHE3072_P: Final = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE"
    "249B3EF97D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3"
    "B557135E7F57C935984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182"
    "B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D70"
    "9E02FCE1CDF7E2ECC03404CD28342F619172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC"
    "2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C0238"
    "61B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91CAEFE130985139270B4130C93BC437944F4FD4452"
    "E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E"
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
    16,
)

X25519: Final = X25519Group()
# The RFC's constants are trusted, not re-proved prime at import (0.7 s of sympy);
# tests/common/crypto/test_crypto_dh.py checks them with from_params.
FFDHE3072: Final = FiniteFieldGroup("ffdhe3072", _FFDHE3072_P, 2)
DEFAULT_GROUP: Final = X25519

_BUILTIN: Final[dict[str, DHGroup]] = {X25519.name: X25519, FFDHE3072.name: FFDHE3072}
_CUSTOM: dict[str, FiniteFieldGroup] = {}


GroupParams = str | bytes | tuple[int, int] | FiniteFieldGroup


def group_by_name(name: str, params: GroupParams | None = None) -> DHGroup:
    """The group called `name`: a built-in, or a custom group given by `params`.

    `params` may be PEM text, PKCS#3 DER bytes, a (p, g) pair or a loaded group; it is
    validated once and remembered for later look-ups by name. InvalidKey if the name is
    unknown or does not match the parameters.
    """
    if name in _BUILTIN:
        return _BUILTIN[name]
    if params is None:
        if name in _CUSTOM:
            return _CUSTOM[name]
        raise InvalidKey(f"unknown DH group {name!r}")
    if isinstance(params, FiniteFieldGroup):
        group = params
    elif isinstance(params, tuple):
        group = FiniteFieldGroup.from_params(params[0], params[1])
    else:
        group = load_pem(params) if isinstance(params, str) else load_der(params)
    if group.name != name:
        raise InvalidKey(f"group name {name!r} does not match its parameters")
    _CUSTOM[name] = group
    return group


PEM_MARKER: Final = "DH PARAMETERS"


def to_pem(group: FiniteFieldGroup) -> str:
    """PKCS#3 "DH PARAMETERS" PEM, readable by `openssl dhparam -in FILE -check`."""
    return PEM.encode(params_der(group.p, group.g), PEM_MARKER) + "\n"


def _parse_der(der: bytes) -> tuple[int, int]:
    try:
        seq = DerSequence().decode(der, strict=True)
    except (ValueError, TypeError, IndexError):
        raise InvalidKey("not a DER DHParameter sequence") from None
    if len(seq) not in (2, 3) or not seq.hasOnlyInts():
        raise InvalidKey("DHParameter must be SEQUENCE { p, g [, privateValueLength] }")
    return int(seq[0]), int(seq[1])


def load_der(der: bytes, *, min_bits: int = MIN_P_BITS) -> FiniteFieldGroup:
    """A validated group from PKCS#3 DER (p, q prime; g of order q; p >= min_bits)."""
    p, g = _parse_der(der)
    return FiniteFieldGroup.from_params(p, g, min_bits=min_bits)


def load_pem(text: str, *, min_bits: int = MIN_P_BITS) -> FiniteFieldGroup:
    """A validated group from a "DH PARAMETERS" PEM file's text; InvalidKey if unusable.

    `min_bits` exists for tests with small groups; real callers keep the 2048-bit floor.
    """
    try:
        der, marker, encrypted = PEM.decode(text)
    except (ValueError, TypeError, IndexError):
        raise InvalidKey("not a PEM file") from None
    if marker != PEM_MARKER or encrypted:
        raise InvalidKey(f"expected an unencrypted {PEM_MARKER} block, found {marker!r}")
    return load_der(der, min_bits=min_bits)
