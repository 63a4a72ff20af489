"""ICE: which host addresses are offered, and remote candidates added within bounds."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

_original_get_host_addresses = aioice.ice.get_host_addresses
_pinned_hosts: list[str] = []


def pin_ice_hosts(addresses: Sequence[str]) -> None:
    """Offer only these host addresses in ICE (empty: aioice's default, all but loopback)."""
    _pinned_hosts[:] = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if not _pinned_hosts:
            return _original_get_host_addresses(use_ipv4, use_ipv6)
        return [a for a in _pinned_hosts if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses  # type: ignore[assignment]


def parse_candidate(line: str) -> RTCIceCandidate:
    """A ``candidate:...`` attribute value; ValueError if it cannot be used.

    Only IP literals and mDNS names (``.local``, see :func:`is_mdns`) are addresses: any other
    host name would make the ICE agent resolve a name a client chose.
    """
    try:
        candidate = candidate_from_sdp(line.split(":", 1)[1])
    except Exception as exc:  # aiortc raises IndexError, ValueError, KeyError on garbage
        raise ValueError(f"cannot parse candidate {line[:80]!r}") from exc
    if not 0 < candidate.port < 65536 or candidate.component not in (1, 2):
        raise ValueError(f"candidate has an impossible port or component: {line[:80]!r}")
    if candidate.protocol.lower() not in ("udp", "tcp"):
        raise ValueError(f"candidate transport must be udp or tcp: {line[:80]!r}")
    if not is_mdns(candidate):
        try:
            ipaddress.ip_address(candidate.ip)
        except ValueError as exc:
            raise ValueError(f"candidate address must be an IP address: {line[:80]!r}") from exc
    return candidate


def is_mdns(candidate: RTCIceCandidate) -> bool:
    """A browser's mDNS name for a host address: meaningless to a server, which skips it (resolving it
    would send multicast queries on the server's network) and learns the address from the checks."""
    return candidate.ip.lower().endswith(".local")
