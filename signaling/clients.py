"""Who the client is: the TCP peer, or behind a trusted reverse proxy the address it forwarded for.

Per-address limits need the client's own address. Behind a proxy every TCP peer is the proxy, so one limit
would be shared by everyone; believing X-Forwarded-For from anyone would let a client pick its own
address. Only proxies on the trusted list are believed, and only for the hops they appended.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# More hops than this in one header is not a real proxy chain; only the last ones are looked at.
MAX_FORWARDED_HOPS = 16


class AddressSet:
    """Addresses and CIDRs (``10.0.0.0/8``, ``127.0.0.1``, ``::1``); ``in`` takes an address string."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        if not self._networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address.strip().removeprefix("[").split("]")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: AddressSet) -> str:
    """The client's address: walking X-Forwarded-For from its end, the first hop that is not a trusted proxy.

    A peer that is not a trusted proxy is the client, whatever it sends; a header of trusted hops only
    leaves the leftmost one (the chain's origin)."""
    address = peer or "unknown"
    if not forwarded_for or address not in trusted:
        return address
    hops = [h.strip() for h in forwarded_for.split(",")[-MAX_FORWARDED_HOPS:]]
    for hop in reversed(hops):
        if not _is_ip(hop):
            return address  # a malformed hop: believe nothing beyond the proxy that sent it
        address = hop
        if hop not in trusted:
            break
    return address


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
