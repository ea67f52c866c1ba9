"""TLS material for the relay: self-signed server cert, client-cert CA, SSL contexts.

`cryptography` is used only to generate X.509 certificates (pycryptodome has none);
contexts come from the stdlib `ssl` module. Clients pin the server certificate by its
SHA-256 fingerprint on first use (like SSH known_hosts), so the relay's certificate is
self-signed and long-lived: replacing it makes every client warn, as it should.

Certificates carry the extensions strict verifiers want (Python 3.13 turns on
VERIFY_X509_STRICT): critical basicConstraints, key usage, subject and authority key
identifiers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hushwire.common.fingerprint import cert_fingerprint
from hushwire.common.names import check_username
from hushwire.relay.errors import TlsMaterialError

# Default file names, next to the db.
SERVER_CERT = "relay-cert.pem"
SERVER_KEY = "relay-key.pem"
CA_CERT = "relay-ca.pem"
CA_KEY = "relay-ca-key.pem"

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
SERVER_DAYS = 3650  # pinned by clients: a short life would only train users to click yes
CA_DAYS = 3650
CLIENT_DAYS = 825  # the longest validity browsers accept for leaf certificates
# Backdate notBefore a little so a client whose clock lags does not reject a new cert.
_BACKDATE = dt.timedelta(hours=1)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Create a key file readable by its owner only (0600) from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# Leaf certificates (the relay's own, and clients'): ECDSA signing only.
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _validity(
    builder: x509.CertificateBuilder, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return builder.not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))


def ensure_server_cert(
    cert_path: str | Path,
    key_path: str | Path,
    hostnames: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
) -> bool:
    """Create a self-signed ECDSA P-256 server cert if absent; True if one was made.

    SANs: localhost, 127.0.0.1, ::1 and `hostnames`. Refuses to touch a half-present
    pair (cert without key or key without cert): that needs an operator's decision.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and have_key:
        return False
    if have_cert or have_key:
        present, absent = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise TlsMaterialError(
            f"{present} exists but {absent} does not; restore it or remove both to "
            "generate a new certificate (clients will then see a new fingerprint)"
        )
    when = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([*DEFAULT_NAMES, *hostnames]))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hushwire relay")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = _validity(builder, when, SERVER_DAYS).sign(key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return True


def fingerprint(cert: str | Path | bytes) -> str:
    """SHA-256 of the certificate's DER, as "AB:CD:..." (what openssl -fingerprint shows).

    Accepts a PEM file path or DER bytes (e.g. `ssl_object.getpeercert(binary_form=True)`).
    """
    if isinstance(cert, bytes):
        der = cert
    else:
        try:
            der = x509.load_pem_x509_certificate(Path(cert).read_bytes()).public_bytes(
                serialization.Encoding.DER
            )
        except (OSError, ValueError) as exc:
            raise TlsMaterialError(f"cannot read certificate {cert}: {exc}") from exc
    return cert_fingerprint(der)


def server_context(
    cert: str | Path, key: str | Path, client_ca: Path | None = None
) -> ssl.SSLContext:
    """Server context: TLS 1.2 minimum (1.3 is negotiated when both sides have it).

    With `client_ca`, clients must present a certificate signed by that CA.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise TlsMaterialError(f"cannot load TLS material: {exc}") from exc
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_name(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The CN of a verified client certificate, or None without one."""
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return None


def ensure_ca(ca_dir: str | Path, *, now: dt.datetime | None = None) -> tuple[Path, Path]:
    """The relay's own client-cert CA in `ca_dir`, created on first use."""
    ca_dir = Path(ca_dir)
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    if cert_path.exists() or key_path.exists():
        raise TlsMaterialError(
            f"only one of {cert_path} and {key_path} exists; restore the other or remove both"
        )
    ca_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hushwire relay client CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = _validity(builder, _now(now), CA_DAYS).sign(key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue_client_cert(
    ca_dir: str | Path,
    name: str,
    out_dir: str | Path,
    *,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue `<name>-cert.pem` / `<name>-key.pem` in `out_dir`: CN=name, clientAuth.

    Signed by the relay's CA in `ca_dir` (created on first use). Refuses to overwrite
    existing files, so a user's working key is never replaced by accident.
    """
    check_username(name)
    out = Path(out_dir)
    cert_path, key_path = out / f"{name}-cert.pem", out / f"{name}-key.pem"
    for p in (cert_path, key_path):
        if p.exists():
            raise TlsMaterialError(f"{p} already exists; remove it to issue a new certificate")
    ca_cert_path, ca_key_path = ensure_ca(ca_dir, now=now)
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TlsMaterialError(f"cannot load the client CA in {ca_dir}: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsMaterialError(f"{ca_key_path} is not an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    cert = _validity(builder, _now(now), CLIENT_DAYS).sign(ca_key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
