"""ICE: which host addresses are offered, on which UDP ports, and remote candidates added within bounds."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from aiortc_bridge.udp_ports import UdpPortPool

log = logging.getLogger("cherry.aiortc.ice")

_original_get_host_addresses = aioice.ice.get_host_addresses
LOOPBACK = "127.0.0.1"
_pinned_hosts: list[str] = []
_port_pool: UdpPortPool | None = None


def pin_ice_hosts(addresses: Sequence[str], *, with_loopback: bool = False) -> None:
    """Offer only these host addresses in ICE. Empty: aioice's default, every interface but loopback, plus
    127.0.0.1 when ``with_loopback`` (a gateway on loopback serves tools and browsers on its own machine)."""
    _pinned_hosts[:] = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if not _pinned_hosts:
            found = list(_original_get_host_addresses(use_ipv4, use_ipv6))
            if with_loopback and use_ipv4 and LOOPBACK not in found:
                found.append(LOOPBACK)
            return found
        return [a for a in _pinned_hosts if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses  # type: ignore[assignment]


def offered_host_addresses() -> list[str]:
    """The host addresses ICE offers now (what :func:`pin_ice_hosts` set up), IPv4 and IPv6."""
    return list(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))


def machine_addresses() -> list[str]:
    """This machine's addresses but loopback, as aioice finds them: what a browser here could offer."""
    return list(_original_get_host_addresses(use_ipv4=True, use_ipv6=True))


# -- host candidates on a fixed UDP port range ---------------------------------------------------------
#
# aioice 0.13 binds every host candidate with ``loop.create_datagram_endpoint(..., local_addr=(address, 0))``
# inside ``Connection.get_component_candidates``, where ``loop`` is ``asyncio.get_running_loop()`` looked up
# through the ``asyncio`` name of ``aioice.ice``. With a range set, that name is a view of asyncio whose
# running loop binds such endpoints on a socket of the range (``sock=``) and releases the port when the
# transport is lost. Nothing else changes: every other attribute is asyncio's or the loop's own, and
# aioice's TURN sockets (``aioice.turn``, its own ``asyncio``) keep ephemeral ports.


class _RangeLoop:
    """The running loop, except that a ``local_addr=(host, 0)`` datagram endpoint is bound in the pool."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: UdpPortPool) -> None:
        self._loop = loop
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], asyncio.DatagramProtocol],
                                       local_addr: tuple[str, int] | None = None,
                                       **kwargs: Any) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        if local_addr is None or local_addr[1] != 0 or kwargs:
            return await self._loop.create_datagram_endpoint(protocol_factory, local_addr=local_addr, **kwargs)
        pool = self._pool
        sock = pool.bind(local_addr[0])  # OSError: aioice logs "Could not bind" and offers no candidate there
        port = int(sock.getsockname()[1])
        released = False

        def release() -> None:
            nonlocal released
            if not released:  # once per binding: a later holder of the same port keeps its claim
                released = True
                pool.release(port)

        def factory() -> asyncio.DatagramProtocol:
            protocol = protocol_factory()
            lost = protocol.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                release()
                lost(exc)

            protocol.connection_lost = connection_lost  # type: ignore[method-assign]
            return protocol

        try:
            return await self._loop.create_datagram_endpoint(factory, sock=sock)
        except BaseException:
            sock.close()
            release()
            raise


class _AsyncioForAioice:
    """``aioice.ice``'s ``asyncio``: the real module, with the running loop seen through :class:`_RangeLoop`."""

    def __init__(self, pool: UdpPortPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def get_running_loop(self) -> _RangeLoop:
        return _RangeLoop(asyncio.get_running_loop(), self._pool)


def use_port_range(first: int, last: int) -> UdpPortPool:
    """Bind this process's ICE host candidates on UDP ports ``first``-``last`` (a worker's slice)."""
    global _port_pool
    _port_pool = UdpPortPool(first, last)
    aioice.ice.asyncio = _AsyncioForAioice(_port_pool)  # type: ignore[assignment]
    log.info("ICE host candidates bind UDP ports %d-%d", first, last)
    return _port_pool


def use_any_port() -> None:
    """Back to aioice's default: host candidates on ephemeral ports (sockets already bound keep their port)."""
    global _port_pool
    _port_pool = None
    aioice.ice.asyncio = asyncio


def port_pool() -> UdpPortPool | None:
    """The range host candidates bind in (None: any free port, aioice's default)."""
    return _port_pool


def host_addresses_per_session() -> int:
    """Host candidate sockets one session binds: one per ICE host address (max-bundle: one component)."""
    return len(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))


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
