"""The PROXY protocol, version 2: the client's address as a load balancer saw it.

Behind HAProxy in TCP mode every connection comes from HAProxy's address, so the
per-address limits (TLS handshakes in progress, failed logins per user and address)
would count all clients as one: an attacker's failed logins for alice would lock alice
out for everyone behind the proxy. With `send-proxy-v2` HAProxy opens each connection
with a binary header naming the client; the relay believes it only from the addresses
in `proxy_protocol` (a connection from there must carry it; from elsewhere it is served
as a direct client and a header would break its TLS handshake).

Format (haproxy.org/download/2.6/doc/proxy-protocol.txt, section 2.2): a 12-byte
signature; one byte version (high nibble, 2) and command (low nibble: 0 LOCAL, the
proxy's own connection such as a health check, or 1 PROXY); one byte family (high
nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport (low nibble: 1 STREAM); a
2-byte big-endian length of what follows; then source address, destination address,
source port, destination port (4+4+2+2 bytes for INET, 16+16+2+2 for INET6); then TLVs,
which are skipped. Pure functions: relay/accept.py reads the bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from hushwire.relay.errors import ProxyHeaderError

SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER: Final = 16  # signature, version/command, family/transport, length
MAX_BODY: Final = 1024  # addresses plus whatever TLVs a proxy adds; more is refused
_LOCAL, _PROXY = 0x0, 0x1
_INET, _INET6 = 0x1, 0x2
_STREAM = 0x1

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def body_length(header: bytes) -> int:
    """How many bytes follow the 16-byte `header`; ProxyHeaderError if it is not one."""
    if len(header) != HEADER or header[:12] != SIGNATURE:
        raise ProxyHeaderError("no PROXY protocol v2 signature")
    if header[12] >> 4 != 2:
        raise ProxyHeaderError(f"PROXY protocol version {header[12] >> 4}, expected 2")
    length = int(struct.unpack_from(">H", header, 14)[0])
    if length > MAX_BODY:
        raise ProxyHeaderError(f"PROXY header of {length} bytes, at most {MAX_BODY}")
    return length


def source_address(header: bytes, body: bytes) -> str | None:
    """The client's address the proxy reports, or None for a LOCAL connection (the
    proxy's own, e.g. a health check: its real address stands)."""
    command, family, transport = header[12] & 0xF, header[13] >> 4, header[13] & 0xF
    if command == _LOCAL:
        return None
    if command != _PROXY:
        raise ProxyHeaderError(f"unknown PROXY command {command}")
    if transport != _STREAM:
        raise ProxyHeaderError("PROXY header for a transport other than TCP")
    size = {_INET: 4, _INET6: 16}.get(family)
    if size is None:
        raise ProxyHeaderError(f"PROXY header for address family {family}, not IPv4 or IPv6")
    if len(body) < 2 * size + 4:
        raise ProxyHeaderError("PROXY header shorter than its addresses")
    return str(ipaddress.ip_address(body[:size]))


def parse_networks(value: str) -> tuple[Network, ...]:
    """`proxy_protocol`: comma-separated addresses or networks (CIDR) of trusted proxies;
    ValueError names a bad one."""
    networks = []
    for item in value.split(","):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {item.strip()!r}") from None
    return tuple(networks)


def trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)
