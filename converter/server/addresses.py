"""Who a client is when nothing better is known: its address, as the per-client limits count it."""

from __future__ import annotations

import ipaddress
from typing import Final

IPV6_PREFIX: Final = 64  # one IPv6 host usually owns a whole /64: counting per address would not bind it


def client_key(host: str | None) -> str:
    """The key per-client limits count under: the IPv4 address, or the /64 an IPv6 address is in.

    An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, a dual-stack listener) counts as its IPv4
    address. Anything that is not an IP address (a Unix socket, no peer) is one shared key.
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (`fe80::1%eth0`)
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)
