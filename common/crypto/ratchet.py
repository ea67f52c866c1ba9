"""The Double Ratchet (Signal, rev. 1, section 3) with the section 5.2 recommendations.

    KDF_RK(rk, dh_out) = HKDF-SHA256(salt=rk, ikm=dh_out, info=b"hushwire/ratchet/v1/root")
                         -> 64 bytes: new root key || chain key
    KDF_CK(ck)         = HMAC-SHA256(ck, 0x01) message key, HMAC-SHA256(ck, 0x02) next ck
    ENCRYPT(mk, pt, ad): version 2: HKDF-SHA256(ikm=mk, salt=the header's 32 random bytes,
                         info=b"hushwire/ratchet/v2/message"); version 1: salt = 32 zero
                         bytes, info=b"hushwire/ratchet/v1/message". -> 44 bytes:
                         AES-256 key (32) || GCM nonce (12); AES-256-GCM, 128-bit tag.
                         5.2 derives an AES-CBC key, HMAC key and IV (80 bytes); GCM needs
                         only a key and a nonce.
    AD of one message  = fields(X3DH AD, header bytes, extra_ad)  (spec 3.4 CONCAT)
    header bytes       = fields(ratchet public key) || u32 PN || u32 N [|| salt (v2)]

Why the salt (version 2): a message key is meant to be used once, but a rolled-back
state (a restored backup, a VM snapshot, a copied profile) derives the same one again
for a different plaintext. With key and nonce a function of the key alone, GCM would
then repeat key and nonce, leaking the XOR of the plaintexts and the authentication
key. A fresh random salt per message, carried in the (authenticated) header, makes
the AES key and nonce differ even when the message key repeats. Version 1 states
(sessions started before) keep the old derivation.

`decrypt` runs on a copy and adopts it only after the AEAD check passes (spec 3.5), so
a tampered, replayed or over-skipping message leaves the state byte-for-byte unchanged.
Skipped message keys are bounded per chain (MAX_SKIP) and in total, oldest evicted
first (spec 6.4). The responder cannot send before it has received: its first sending
chain comes from a fresh ratchet key pair, which is the rerandomisation X3DH 4.3 asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from hushwire.common.crypto.dh import FFDHE3072, X25519, DHGroup, DHKeyPair
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_canonical,
)
from hushwire.common.crypto.encoding import fields as encode_fields
from hushwire.common.crypto.primitives import (
    AEAD_KEY_LEN,
    AEAD_NONCE_LEN,
    HASH_LEN,
    OS_RANDOM,
    Random,
    aead_open,
    aead_seal,
    hkdf_sha256,
    hmac_sha256,
)
from hushwire.common.errors import (
    CryptoError,
    DecryptionError,
    LocalProtocolError,
    ReplayError,
    TooManySkipped,
)

ROOT_INFO: Final = b"hushwire/ratchet/v1/root"
MESSAGE_INFO: Final = {1: b"hushwire/ratchet/v1/message", 2: b"hushwire/ratchet/v2/message"}
SALT_LEN: Final = {1: 0, 2: 32}  # random bytes each header carries, per message format
MAX_COUNTER: Final = 2**32 - 1
MAX_PREVIOUS_CHAINS: Final = 5  # as libsignal's receiver chains: enough to name replays
MESSAGE_VERSION: Final = 2  # what new sessions use; the state's version byte says which


@dataclass(frozen=True, slots=True)
class RatchetConfig:
    """Limits and allowed groups, passed as one object (not repeated parameters)."""

    max_skip: int = 1000  # per receiving chain (spec MAX_SKIP)
    max_skipped_keys: int = 2000  # total stored skipped keys, oldest evicted (6.4)
    groups: tuple[DHGroup, ...] = (X25519, FFDHE3072)
    rand: Random = OS_RANDOM  # ratchet keys and envelope ids; scripted only by tests

    def group(self, name: str) -> DHGroup:
        """The allowed group called `name`; CryptoError if this config does not allow it."""
        for group in self.groups:
            if group.name == name:
                return group
        raise CryptoError(f"DH group {name!r} is not allowed by this configuration")


@dataclass(frozen=True, slots=True)
class RatchetHeader:
    """Spec 3.1 HEADER(dh_pair, pn, n): ratchet public key, PN, N, and (v2) the salt."""

    dh: bytes
    pn: int
    n: int
    salt: bytes = b""  # version 2: 32 fresh random bytes mixed into the message's key

    def to_bytes(self) -> bytes:
        counters = self.pn.to_bytes(4, "big") + self.n.to_bytes(4, "big")
        return encode_fields(self.dh) + counters + self.salt

    @classmethod
    def from_bytes(cls, data: bytes, version: int = 1) -> RatchetHeader:
        """Strict inverse of `to_bytes` for a message format; ValueError if malformed."""
        salt_len = SALT_LEN[version]
        if not isinstance(data, bytes) or len(data) < 10 + salt_len:
            raise ValueError("ratchet header too short")
        size = int.from_bytes(data[:2], "big")
        if len(data) != 2 + size + 8 + salt_len:
            raise ValueError("ratchet header has the wrong length")
        counters = data[2 + size : 2 + size + 8]
        return cls(
            dh=data[2 : 2 + size],
            pn=int.from_bytes(counters[:4], "big"),
            n=int.from_bytes(counters[4:], "big"),
            salt=data[2 + size + 8 :],
        )


def kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """Spec 5.2 KDF_RK: HKDF with the root key as salt, DH output as input -> (rk, ck)."""
    out = hkdf_sha256(dh_out, 64, salt=root_key, info=ROOT_INFO)
    return out[:32], out[32:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    """Spec 5.2 KDF_CK: HMAC-SHA256 with constants 0x01 (message key), 0x02 (chain key).

    Returns (next chain key, message key).
    """
    return hmac_sha256(chain_key, b"\x02"), hmac_sha256(chain_key, b"\x01")


def message_key_material(message_key: bytes, salt: bytes = b"") -> tuple[bytes, bytes]:
    """ENCRYPT's key schedule: (AES-256 key, GCM nonce) for one message key.

    `salt` is the header's random salt (version 2, 32 bytes) or empty (version 1, which
    means HKDF's 32 zero bytes).
    """
    version = 2 if salt else 1
    if len(salt) != SALT_LEN[version]:
        raise DecryptionError("message salt has the wrong length")
    okm = hkdf_sha256(
        message_key,
        AEAD_KEY_LEN + AEAD_NONCE_LEN,
        salt=salt or bytes(HASH_LEN),
        info=MESSAGE_INFO[version],
    )
    return okm[:AEAD_KEY_LEN], okm[AEAD_KEY_LEN:]


def encrypt_message(message_key: bytes, salt: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """Spec ENCRYPT: AES-256-GCM under a key and nonce derived from the message key."""
    key, nonce = message_key_material(message_key, salt)
    return aead_seal(key, nonce, plaintext, ad)


def decrypt_message(message_key: bytes, salt: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Spec DECRYPT; DecryptionError if authentication fails."""
    key, nonce = message_key_material(message_key, salt)
    return aead_open(key, nonce, ciphertext, ad)


class RatchetState:
    """One party's Double Ratchet state (spec 3.2), serialisable to versioned bytes."""

    __slots__ = (
        "ad",
        "ckr",
        "cks",
        "config",
        "dhr",
        "dhs",
        "group",
        "nr",
        "ns",
        "pn",
        "previous",
        "rk",
        "skipped",
        "version",
    )

    def __init__(
        self,
        *,
        group: DHGroup,
        config: RatchetConfig,
        dhs: DHKeyPair,
        dhr: bytes | None,
        rk: bytes,
        cks: bytes | None,
        ckr: bytes | None,
        ns: int,
        nr: int,
        pn: int,
        ad: bytes,
        skipped: dict[tuple[bytes, int], bytes],
        previous: list[bytes],
        version: int,
    ) -> None:
        self.version = version  # message format: 1 (legacy) or 2 (salted, rollback-safe)
        self.group = group
        self.config = config
        self.dhs = dhs
        self.dhr = dhr
        self.rk = rk
        self.cks = cks
        self.ckr = ckr
        self.ns = ns
        self.nr = nr
        self.pn = pn
        self.ad = ad
        self.skipped = skipped  # insertion order == age, for oldest-first eviction
        self.previous = previous  # earlier receiving ratchet keys, newest last

    @classmethod
    def init_alice(
        cls,
        shared_key: bytes,
        bob_public: bytes,
        ad: bytes,
        group: DHGroup,
        config: RatchetConfig | None = None,
        *,
        version: int = MESSAGE_VERSION,
    ) -> RatchetState:
        """Spec 3.3 RatchetInitAlice: SK from X3DH, Bob's signed prekey as his ratchet key."""
        config = config or RatchetConfig()
        config.group(group.name)
        dhs = group.generate(config.rand)
        rk, cks = kdf_rk(shared_key, group.agree(dhs.private, bob_public))
        return cls(
            group=group, config=config, dhs=dhs, dhr=bob_public, rk=rk, cks=cks, ckr=None,
            ns=0, nr=0, pn=0, ad=ad, skipped={}, previous=[], version=_check_version(version),
        )  # fmt: skip

    @classmethod
    def init_bob(
        cls,
        shared_key: bytes,
        bob_keypair: DHKeyPair,
        ad: bytes,
        group: DHGroup,
        config: RatchetConfig | None = None,
        *,
        version: int = MESSAGE_VERSION,
    ) -> RatchetState:
        """Spec 3.3 RatchetInitBob: the signed prekey pair is the first ratchet key pair."""
        config = config or RatchetConfig()
        config.group(group.name)
        return cls(
            group=group, config=config, dhs=bob_keypair, dhr=None, rk=shared_key, cks=None,
            ckr=None, ns=0, nr=0, pn=0, ad=ad, skipped={}, previous=[],
            version=_check_version(version),
        )  # fmt: skip

    @property
    def can_send(self) -> bool:
        """False for the responder until the initiator's first message has decrypted."""
        return self.cks is not None

    def _message_ad(self, header: RatchetHeader, extra_ad: bytes) -> bytes:
        # Spec 3.4 CONCAT(AD, header): length-prefixed, so it parses unambiguously.
        return encode_fields(self.ad, header.to_bytes(), extra_ad)

    def encrypt(self, plaintext: bytes, extra_ad: bytes = b"") -> tuple[RatchetHeader, bytes]:
        """Spec 3.4 RatchetEncrypt: next sending message key, header, AEAD ciphertext."""
        if self.cks is None:
            raise LocalProtocolError("cannot send before the peer's first message arrived")
        if self.ns >= MAX_COUNTER:
            raise LocalProtocolError("sending chain exhausted")
        self.cks, mk = kdf_ck(self.cks)
        salt = self.config.rand(SALT_LEN[self.version]) if self.version >= 2 else b""
        header = RatchetHeader(self.dhs.public, self.pn, self.ns, salt)
        self.ns += 1
        return header, encrypt_message(mk, salt, plaintext, self._message_ad(header, extra_ad))

    def decrypt(self, header: RatchetHeader, ciphertext: bytes, extra_ad: bytes = b"") -> bytes:
        """Spec 3.5 RatchetDecrypt on a copy, kept only if authentication succeeds.

        Raises DecryptionError (tampered), ReplayError (key already used or gone),
        TooManySkipped (a jump past max_skip) or InvalidKey (bad ratchet key); on any
        error the state is unchanged.
        """
        work = self.copy()
        plaintext = work._decrypt(header, ciphertext, extra_ad)
        self._adopt(work)
        return plaintext

    def _decrypt(self, header: RatchetHeader, ciphertext: bytes, extra_ad: bytes) -> bytes:
        if len(header.salt) != SALT_LEN[self.version]:
            raise DecryptionError(f"header is not of message format {self.version}")
        ad = self._message_ad(header, extra_ad)
        mk = self.skipped.pop((header.dh, header.n), None)
        if mk is not None:  # spec TrySkippedMessageKeys
            return decrypt_message(mk, header.salt, ciphertext, ad)
        if header.dh != self.dhr:
            if header.dh in self.previous:
                # An earlier chain: its unreceived keys were all stored as skipped when
                # the chain ended, so a key not there was used (or evicted).
                raise ReplayError("message from an earlier chain, key already used")
            if header.dh == self.dhs.public:
                raise DecryptionError("message reflected back with our own ratchet key")
            self._skip_message_keys(header.pn)
            self._dh_ratchet(header)
        elif header.n < self.nr:
            raise ReplayError("message key already used")
        self._skip_message_keys(header.n)
        if self.ckr is None:  # Alice, header naming Bob's prekey: he never sends with it
            raise DecryptionError("no receiving chain for this ratchet key")
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr += 1
        return decrypt_message(mk, header.salt, ciphertext, ad)

    def _skip_message_keys(self, until: int) -> None:
        # Spec 3.5 SkipMessageKeys with MAX_SKIP per chain; total bound with eviction (6.4).
        if self.nr + self.config.max_skip < until:
            raise TooManySkipped(
                f"message {until} is more than {self.config.max_skip} ahead of {self.nr}"
            )
        if self.ckr is None or self.dhr is None:
            return
        while self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1
        excess = len(self.skipped) - self.config.max_skipped_keys
        if excess > 0:
            for key in list(self.skipped)[:excess]:
                del self.skipped[key]

    def _dh_ratchet(self, header: RatchetHeader) -> None:
        # Spec 3.5 DHRatchet.
        if self.dhr is not None:
            self.previous = [*self.previous, self.dhr][-MAX_PREVIOUS_CHAINS:]
        self.pn = self.ns
        self.ns = 0
        self.nr = 0
        self.dhr = header.dh
        self.rk, self.ckr = kdf_rk(self.rk, self.group.agree(self.dhs.private, self.dhr))
        self.dhs = self.group.generate(self.config.rand)
        self.rk, self.cks = kdf_rk(self.rk, self.group.agree(self.dhs.private, self.dhr))

    def copy(self) -> RatchetState:
        """An independent copy (bytes are immutable; the containers are copied)."""
        return RatchetState(
            group=self.group, config=self.config, dhs=self.dhs, dhr=self.dhr, rk=self.rk,
            cks=self.cks, ckr=self.ckr, ns=self.ns, nr=self.nr, pn=self.pn, ad=self.ad,
            skipped=dict(self.skipped), previous=list(self.previous), version=self.version,
        )  # fmt: skip

    def _adopt(self, other: RatchetState) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))

    def to_bytes(self) -> bytes:
        """Version byte (= the message format), then msgpack; restores exactly."""
        body = [
            self.group.name,
            self.dhs.private,
            self.dhs.public,
            self.dhr,
            self.rk,
            self.cks,
            self.ckr,
            self.ns,
            self.nr,
            self.pn,
            self.ad,
            [[dh, n, mk] for (dh, n), mk in self.skipped.items()],
            list(self.previous),
        ]
        return bytes([self.version]) + pack(body)

    @classmethod
    def from_bytes(cls, data: bytes, config: RatchetConfig | None = None) -> RatchetState:
        """Load any supported version; CryptoError if the bytes are not a valid state."""
        config = config or RatchetConfig()
        if not isinstance(data, bytes) or not data or data[0] not in _LOADERS:
            raise CryptoError("unsupported ratchet state version")
        try:
            return _LOADERS[data[0]](data[1:], config)
        except ValueError as exc:
            raise CryptoError(f"malformed ratchet state: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RatchetState) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable


def _opt_bytes(value: Any, length: int | None = None) -> bytes | None:
    return None if value is None else expect_bytes(value, length)


def _check_version(version: int) -> int:
    if version not in SALT_LEN:
        raise LocalProtocolError(f"unknown ratchet message format {version}")
    return version


def _load(body: bytes, config: RatchetConfig, version: int) -> RatchetState:
    """Versions 1 and 2 share one layout; the version byte picks the message format."""
    items = expect_list(unpack_canonical(body), 13)
    group = config.group(expect_str(items[0]))
    skipped: dict[tuple[bytes, int], bytes] = {}
    if not isinstance(items[11], list) or not isinstance(items[12], list):
        raise ValueError("skipped keys and previous chains must be lists")
    for entry in items[11]:
        dh, n, mk = expect_list(entry, 3)
        skipped[(expect_bytes(dh), expect_int(n, 0, MAX_COUNTER))] = expect_bytes(mk, 32)
    return RatchetState(
        group=group,
        config=config,
        dhs=DHKeyPair(private=expect_bytes(items[1]), public=expect_bytes(items[2])),
        dhr=_opt_bytes(items[3]),
        rk=expect_bytes(items[4], 32),
        cks=_opt_bytes(items[5], 32),
        ckr=_opt_bytes(items[6], 32),
        ns=expect_int(items[7], 0, MAX_COUNTER),
        nr=expect_int(items[8], 0, MAX_COUNTER),
        pn=expect_int(items[9], 0, MAX_COUNTER),
        ad=expect_bytes(items[10]),
        skipped=skipped,
        previous=[expect_bytes(k) for k in items[12]],
        version=version,
    )


# Every state version ever written stays loadable: add a loader, never remove one.
_LOADERS: Final[dict[int, Callable[[bytes, RatchetConfig], RatchetState]]] = {
    1: lambda body, config: _load(body, config, 1),
    2: lambda body, config: _load(body, config, 2),
}
