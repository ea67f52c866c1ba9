"""TLS material: generated certs, fingerprints, real handshakes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hushwire.common.errors import RequestError
from hushwire.relay import tls
from hushwire.relay.errors import TlsMaterialError


@pytest.fixture
def server_pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / tls.SERVER_CERT, tmp_path / tls.SERVER_KEY
    assert tls.ensure_server_cert(cert, key, ["relay.example.org"])
    return cert, key


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def client_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 clients will do
    return ctx


async def talk(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[bytes, str | None, bytes, list[str | None]]:
    """Echo one line over a real TLS connection; return reply, version, peer DER, names."""
    seen: list[str | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(tls.peer_name(writer.get_extra_info("ssl_object")))
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"),
            5,
        )
        sslobj = writer.get_extra_info("ssl_object")
        version, der = sslobj.version(), sslobj.getpeercert(binary_form=True)
        writer.write(b"hi\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return reply, version, der, seen
    finally:
        server.close()
        await server.wait_closed()


def test_server_cert_is_created_once_with_private_key_0600(
    tmp_path: Path, server_pair: tuple[Path, Path]
) -> None:
    cert_path, key_path = server_pair
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    before = cert_path.read_bytes()
    assert not tls.ensure_server_cert(cert_path, key_path, ["other"])
    assert cert_path.read_bytes() == before
    cert = load(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "relay.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert cert.signature_hash_algorithm is not None
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_half_present_pair_is_refused(tmp_path: Path, server_pair: tuple[Path, Path]) -> None:
    cert, key = server_pair
    key.unlink()
    with pytest.raises(TlsMaterialError, match="exists but"):
        tls.ensure_server_cert(cert, key, [])
    assert not key.exists()


def test_fingerprint_is_sha256_of_der_in_colon_hex(server_pair: tuple[Path, Path]) -> None:
    cert_path, _ = server_pair
    der = load(cert_path).public_bytes(serialization.Encoding.DER)
    fp = tls.fingerprint(cert_path)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    assert fp.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert tls.fingerprint(der) == fp
    with pytest.raises(TlsMaterialError):
        tls.fingerprint(cert_path.with_name("missing.pem"))


async def test_handshake_with_client_pinned_to_the_cert(server_pair: tuple[Path, Path]) -> None:
    cert, key = server_pair
    reply, version, der, seen = await talk(tls.server_context(cert, key), client_context(cert))
    assert reply == b"echo hi\n"
    assert version == "TLSv1.3"
    assert tls.fingerprint(der) == tls.fingerprint(cert)
    assert seen == [None]  # no client certificate asked for


async def test_tls12_client_still_works_but_nothing_older(server_pair: tuple[Path, Path]) -> None:
    cert, key = server_pair
    ctx = tls.server_context(cert, key)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    client = client_context(cert)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    _, version, _, _ = await talk(ctx, client)
    assert version == "TLSv1.2"


async def test_client_pinned_to_another_cert_refuses(
    tmp_path: Path, server_pair: tuple[Path, Path]
) -> None:
    cert, key = server_pair
    other = tmp_path / "other"
    other.mkdir()
    tls.ensure_server_cert(other / "c.pem", other / "k.pem", [])
    with pytest.raises(ssl.SSLCertVerificationError):
        await talk(tls.server_context(cert, key), client_context(other / "c.pem"))


async def test_mutual_tls_accepts_issued_client_cert(
    tmp_path: Path, server_pair: tuple[Path, Path]
) -> None:
    cert, key = server_pair
    ca_cert, _ = tls.ensure_ca(tmp_path)
    c_cert, c_key = tls.issue_client_cert(tmp_path, "alice", tmp_path / "out")
    client = client_context(cert)
    client.load_cert_chain(str(c_cert), str(c_key))
    reply, _, _, seen = await talk(tls.server_context(cert, key, client_ca=ca_cert), client)
    assert reply == b"echo hi\n"
    assert seen == ["alice"]


async def _refused(server_ctx: ssl.SSLContext, client: ssl.SSLContext) -> None:
    # TLS 1.3: the client may finish its side before the server's alert arrives, so the
    # refusal shows as an SSL error or a connection closed without any reply.
    try:
        reply, _, _, seen = await talk(server_ctx, client)
    except (ssl.SSLError, ConnectionError):
        return
    assert reply == b"" and seen == []


async def test_mutual_tls_refuses_client_without_cert(
    tmp_path: Path, server_pair: tuple[Path, Path]
) -> None:
    cert, key = server_pair
    ca_cert, _ = tls.ensure_ca(tmp_path)
    await _refused(tls.server_context(cert, key, client_ca=ca_cert), client_context(cert))


async def test_mutual_tls_refuses_cert_from_another_ca(
    tmp_path: Path, server_pair: tuple[Path, Path]
) -> None:
    cert, key = server_pair
    ca_cert, _ = tls.ensure_ca(tmp_path / "ours")
    c_cert, c_key = tls.issue_client_cert(tmp_path / "theirs", "alice", tmp_path / "out")
    client = client_context(cert)
    client.load_cert_chain(str(c_cert), str(c_key))
    await _refused(tls.server_context(cert, key, client_ca=ca_cert), client)


def test_issued_client_cert_fields(tmp_path: Path) -> None:
    c_cert, c_key = tls.issue_client_cert(tmp_path, "bob", tmp_path / "out")
    assert (c_cert.name, c_key.name) == ("bob-cert.pem", "bob-key.pem")
    assert stat.S_IMODE(c_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / tls.CA_KEY).stat().st_mode) == 0o600
    cert = load(c_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = load(tmp_path / tls.CA_CERT)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    # The CA is reused, not regenerated, for the next user.
    tls.issue_client_cert(tmp_path, "carol", tmp_path / "out")
    assert load(tmp_path / tls.CA_CERT) == ca


def test_issue_refuses_overwrite_and_bad_names(tmp_path: Path) -> None:
    tls.issue_client_cert(tmp_path, "bob", tmp_path / "out")
    with pytest.raises(TlsMaterialError, match="already exists"):
        tls.issue_client_cert(tmp_path, "bob", tmp_path / "out")
    with pytest.raises(RequestError):
        tls.issue_client_cert(tmp_path, "../evil", tmp_path / "out")
    assert not (tmp_path / "evil-cert.pem").exists()


def test_server_context_reports_unreadable_material(tmp_path: Path) -> None:
    with pytest.raises(TlsMaterialError):
        tls.server_context(tmp_path / "nope.pem", tmp_path / "nope-key.pem")
