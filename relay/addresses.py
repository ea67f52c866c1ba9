"""Client addresses as the relay counts them: by network prefix, not exact address.

One host owns a whole IPv6 /64 (SLAAC, privacy addresses), and an IPv4 attacker
commonly holds neighbouring addresses, so a budget per exact address is one per
attempt for them. Budgets (failed logins, pending handshakes) are per /24 (IPv4) or
/64 (IPv6); an IPv4-mapped IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress

IPV4_PREFIX = 24
IPV6_PREFIX = 64


def address_prefix(address: str) -> str:
    """The network an address is counted under, e.g. '203.0.113.0/24'."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP (a Unix socket, "unknown"): counted as itself
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
