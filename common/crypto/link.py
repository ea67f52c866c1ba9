"""Linking a new device to an account over a channel the relay carries but cannot enter.

The existing device E makes an ephemeral key pair e and a 128-bit secret s and shows the
link code; the new device N types it in. The relay only forwards:

    code    = "hw1-" + base32(channel || s [|| pin]),
              channel = SHA-256(ctx/channel || fields(group, e))[:16],
              pin = SHA-256 of the relay's certificate as E's connection has it (32 bytes)
    E -> relay    link_start  channel, e
    N -> relay    link_fetch  channel            -> e      N checks channel == H(e)
    N             n fresh; k_req || k_resp = HKDF(DH(n, e), salt = s,
                               info = ctx/keys || fields(group, channel, e, n)), 64 bytes
    N -> E        link_join   n, AEAD(k_req, [1, name, N's DH identity key])
    E -> N        link_accept AEAD(k_resp, [1, account, identity seed, device id,
                                                list body, list sig])

(ctx = b"hushwire/link/v1"; AEAD is AES-256-GCM with a zero nonce, as each key seals one
message, and AD = ctx || fields(channel, e, n).) The relay knows e and n but not s, so it
can neither read the request or the grant nor make either up: swapping e for its own key
fails the hash in the code, and swapping n fails the AEAD under a key that needs s.

N connects only to a relay presenting the certificate whose hash is `pin`, so a new device
never trusts the relay's certificate on first use. E accepts one request per code, and
none after the expiry; a request that fails to open
(a guess, a relay's forgery) does not use the code up. N accepts one grant, and only if
the device list inside verifies under the identity seed it carries and lists N's own key.
Both sides take the time and randomness as arguments.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from Crypto.Hash import SHA256

from hushwire.common.crypto.devices import (
    Device,
    DeviceList,
    check_device_name,
    verify_device_list,
)
from hushwire.common.crypto.dh import DHGroup, DHKeyPair
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    fields,
    pack,
    unpack_canonical,
)
from hushwire.common.crypto.identity import IdentityKeyPair, identity_dh_message
from hushwire.common.crypto.primitives import (
    AEAD_NONCE_LEN,
    aead_open,
    aead_seal,
    ct_equal,
    ed25519_public_from_seed,
    ed25519_sign,
    hkdf_sha256,
)
from hushwire.common.errors import (
    CryptoError,
    LinkError,
    LinkExpired,
    LinkUsed,
)
from hushwire.common.fingerprint import FINGERPRINT_LEN, show_fingerprint
from hushwire.common.keys import SignedDeviceList

LINK_CONTEXT: Final = b"hushwire/link/v1"
CODE_PREFIX: Final = "hw1"
CHANNEL_LEN: Final = 16
SECRET_LEN: Final = 16
_PAYLOAD_VERSION: Final = 1
_ZERO_NONCE: Final = bytes(AEAD_NONCE_LEN)
_MAX_DEVICE_ID: Final = 2**32 - 1

Random = Callable[[int], bytes]


def channel_of(group: DHGroup, ephemeral: bytes) -> bytes:
    """The channel id: a 128-bit commitment to the existing device's ephemeral key."""
    digest = SHA256.new(LINK_CONTEXT + b"/channel" + fields(group.name.encode(), ephemeral))
    return digest.digest()[:CHANNEL_LEN]


@dataclass(frozen=True, slots=True)
class LinkCode:
    """What the user carries from the old device to the new one."""

    channel: bytes
    secret: bytes = field(repr=False)
    # SHA-256 of the relay's certificate as the existing device knows it (None: a code
    # from a client that did not carry it; the new device then needs its own pin or CA).
    pin: bytes | None = None

    def text(self) -> str:
        """`hw1-` then base32 in groups of four, lower case (typed or pasted)."""
        data = self.channel + self.secret + (self.pin or b"")
        raw = base64.b32encode(data).decode().rstrip("=").lower()
        return "-".join([CODE_PREFIX, *(raw[i : i + 4] for i in range(0, len(raw), 4))])

    def fingerprint(self) -> str | None:
        """The pinned certificate in the "AB:CD:..." form, if the code carries one."""
        return None if self.pin is None else show_fingerprint(self.pin)

    @classmethod
    def parse(cls, text: str) -> LinkCode:
        """Inverse of `text`, forgiving case, spaces and dashes; LinkError otherwise."""
        compact = "".join(text.split()).replace("-", "").lower()
        if not compact.startswith(CODE_PREFIX):
            raise LinkError(f"a link code starts with {CODE_PREFIX}-")
        raw = compact[len(CODE_PREFIX) :].upper()
        try:
            data = base64.b32decode(raw + "=" * (-len(raw) % 8))
        except (binascii.Error, ValueError):
            raise LinkError("the link code is mistyped") from None
        short = CHANNEL_LEN + SECRET_LEN
        if len(data) not in (short, short + FINGERPRINT_LEN):
            raise LinkError("the link code is mistyped (wrong length)")
        return cls(data[:CHANNEL_LEN], data[CHANNEL_LEN:short], data[short:] or None)


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """What the new device asks to be listed as."""

    name: str
    dh_key: bytes


@dataclass(frozen=True, slots=True)
class LinkGrant:
    """What the new device receives: the account identity and the list that names it."""

    account: str
    identity: IdentityKeyPair
    device: Device
    device_list: DeviceList
    signed_list: SignedDeviceList


def _keys(
    group: DHGroup, shared: bytes, code: LinkCode, e_pub: bytes, n_pub: bytes
) -> tuple[bytes, bytes, bytes]:
    info = LINK_CONTEXT + b"/keys" + fields(group.name.encode(), code.channel, e_pub, n_pub)
    okm = hkdf_sha256(shared, 64, salt=code.secret, info=info)
    ad = LINK_CONTEXT + fields(code.channel, e_pub, n_pub)
    return okm[:32], okm[32:], ad


class LinkOffer:
    """The existing device's side: one code, one request, one grant."""

    def __init__(
        self,
        group: DHGroup,
        *,
        now: float,
        ttl: float,
        pin: bytes | None = None,
        rng: Random = secrets.token_bytes,
    ) -> None:
        self.group = group
        self._ephemeral = group.generate()
        channel = channel_of(group, self._ephemeral.public)
        self.code = LinkCode(channel, rng(SECRET_LEN), pin)
        self.expires_at = now + ttl
        self._resp_key: bytes | None = None
        self._ad = b""
        self._used = False
        self._granted = False

    @property
    def ephemeral(self) -> bytes:
        return self._ephemeral.public

    def open_request(self, n_pub: bytes, sealed: bytes, *, now: float) -> LinkRequest:
        """Authenticate and read the new device's request (once, before the expiry)."""
        if self._used:
            raise LinkUsed("this link code was already used")
        if now >= self.expires_at:
            raise LinkExpired("this link code has expired")
        self.group.check_public(n_pub)
        shared = self.group.agree(self._ephemeral.private, n_pub)
        req_key, resp_key, ad = _keys(self.group, shared, self.code, self.ephemeral, n_pub)
        plain = aead_open(req_key, _ZERO_NONCE, sealed, ad)
        try:
            version, name, dh_key = expect_list(unpack_canonical(plain), 3)
            expect_int(version, _PAYLOAD_VERSION, _PAYLOAD_VERSION)
            request = LinkRequest(check_device_name(name), expect_bytes(dh_key))
        except ValueError as exc:
            raise LinkError(f"malformed link request: {exc}") from None
        self.group.check_public(request.dh_key)
        self._used = True
        self._resp_key, self._ad = resp_key, ad
        return request

    def seal_grant(
        self, identity: IdentityKeyPair, device_id: int, signed_list: SignedDeviceList
    ) -> bytes:
        """Seal the identity seed and the new signed list for the requesting device."""
        if self._resp_key is None or self._granted:
            raise LinkError("a grant needs exactly one opened request")
        self._granted = True
        dlist = DeviceList.decode(signed_list.body)
        payload = pack(
            [
                _PAYLOAD_VERSION,
                dlist.account,
                identity.sign_seed,
                device_id,
                signed_list.body,
                signed_list.sig,
            ]
        )
        return aead_seal(self._resp_key, _ZERO_NONCE, payload, self._ad)


class LinkJoiner:
    """The new device's side: check the offer, send one request, open one grant."""

    def __init__(self, group: DHGroup, code: LinkCode, name: str, dh: DHKeyPair) -> None:
        self.group = group
        self.code = code
        self.name = check_device_name(name)
        self.dh = dh  # the new device's own DH identity key pair
        self._resp_key: bytes | None = None
        self._ad = b""
        self._done = False

    def request(self, e_pub: bytes) -> tuple[bytes, bytes]:
        """(n, sealed request) for the ephemeral key the relay says the code belongs to."""
        if not isinstance(e_pub, bytes) or not ct_equal(
            channel_of(self.group, e_pub), self.code.channel
        ):
            raise LinkError("the relay's key does not match the link code")
        self.group.check_public(e_pub)
        n = self.group.generate()
        shared = self.group.agree(n.private, e_pub)
        req_key, self._resp_key, self._ad = _keys(self.group, shared, self.code, e_pub, n.public)
        payload = pack([_PAYLOAD_VERSION, self.name, self.dh.public])
        return n.public, aead_seal(req_key, _ZERO_NONCE, payload, self._ad)

    def open_grant(self, sealed: bytes) -> LinkGrant:
        """Read and check the grant: the list must verify under the seed it came with and
        name this device's key under the given id."""
        if self._resp_key is None or self._done:
            raise LinkError("a grant is opened once, after the request")
        plain = aead_open(self._resp_key, _ZERO_NONCE, sealed, self._ad)
        try:
            version, account, seed, device_id, body, sig = expect_list(unpack_canonical(plain), 6)
            expect_int(version, _PAYLOAD_VERSION, _PAYLOAD_VERSION)
            account = expect_str(account)
            seed = expect_bytes(seed, 32)
            device_id = expect_int(device_id, 1, _MAX_DEVICE_ID)
            signed = SignedDeviceList(expect_bytes(body), expect_bytes(sig))
        except ValueError as exc:
            raise LinkError(f"malformed link grant: {exc}") from None
        sig_dh = ed25519_sign(seed, identity_dh_message(self.group.name, self.dh.public))
        identity = IdentityKeyPair(
            self.group.name, seed, ed25519_public_from_seed(seed), self.dh, sig_dh
        )
        try:
            dlist = verify_device_list(
                signed, account=account, identity=identity.public(), group=self.group
            )
        except CryptoError as exc:
            raise LinkError(f"the grant's device list is not valid: {exc.message}") from None
        device = dlist.device(device_id)
        if device is None or device.dh_key != self.dh.public:
            raise LinkError("the grant's device list does not name this device")
        self._done = True
        return LinkGrant(account, identity, device, dlist, signed)


__all__ = [
    "CHANNEL_LEN",
    "LINK_CONTEXT",
    "LinkCode",
    "LinkGrant",
    "LinkJoiner",
    "LinkOffer",
    "LinkRequest",
    "channel_of",
]
