"""RTCPeerConnection set-up every load client shares.

Only 127.0.0.1 may carry test traffic on these machines, and aiortc's default
ICE server is a public STUN host: both are fixed here, once per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiortc import RTCConfiguration, RTCPeerConnection

import aiortc_bridge
from aiortc_bridge.ice import pin_ice_hosts

DEFAULT_ICE_HOSTS: tuple[str, ...] = ("127.0.0.1",)

_pinned: tuple[str, ...] | None = None


def configure_ice(hosts: Sequence[str] = DEFAULT_ICE_HOSTS) -> None:
    """Pin ICE host candidates for this process; must run before any connection exists."""
    global _pinned
    wanted = tuple(hosts)
    if _pinned is not None and _pinned != wanted:
        raise RuntimeError(f"ICE hosts already pinned to {_pinned}")
    aiortc_bridge.install()
    pin_ice_hosts(list(wanted))
    _pinned = wanted


def new_peer_connection() -> RTCPeerConnection:
    if _pinned is None:
        raise RuntimeError("configure_ice() must be called before creating peer connections")
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    """Wait for connectionState ``connected``; raise on failure, close or timeout."""
    if pc.connectionState == "connected":
        return
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        state = pc.connectionState
        if state in ("connected", "failed", "closed") and not done.done():
            done.set_result(state)

    try:
        state = await asyncio.wait_for(done, timeout)
    finally:
        pc.remove_listener("connectionstatechange", on_state)
    if state != "connected":
        raise ConnectionError(f"peer connection {state}")
