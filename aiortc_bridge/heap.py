"""Keeping the cycle collector's pauses short in a process full of aiortc peers.

CPython's full (generation 2) collection stops the event loop while it walks every tracked object. A
worker's heap is the imports (aiortc, aiohttp, av: ~75k objects) plus its peers' state, and a closed
peer's state is a reference cycle that only such a pass frees. With 50 viewers one pass took 110-145 ms
here (`make bench`'s TTFF step, keyframes only on PLI): every viewer got one frame that late, which a
player shows as a freeze. Three things keep it short:

* :func:`freeze_start_up_heap`: what start-up built lives as long as the process, so it is moved out of
  the collector's sight once (``gc.freeze``) and never walked again;
* :func:`drop_bitrate_estimator`: aiortc gives every video receiver a bandwidth estimator whose rate
  counter is 1000 objects, also on a send-only transceiver (a gateway's viewer) or a receiver whose
  packets bypass aiortc (a lean load viewer), where it never sees a packet;
* :func:`release_later`: a closed peer connection is a web of cycles (its transports hold its bound
  methods as event listeners, transceivers and transports point at each other, our ports are patched into
  its senders), ~480 objects that only a full pass frees: in a churning room, tens of thousands per pass.
  Once the peer has been closed for a while, its own objects let go of each other, so that reference
  counting frees nearly all of it at once, a session at a time (~110 objects a peer are left to the collector).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import deque
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver

log = logging.getLogger("cherry.aiortc_bridge.heap")
# Long after aiortc's own tasks of a closed peer have ended (its close awaits them; stragglers are cancelled).
RELEASE_DELAY_S = 5.0


def freeze_start_up_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; the number exempted."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def drop_bitrate_estimator(receiver: RTCRtpReceiver) -> None:
    """For a receiver whose own RTP path never runs: aiortc checks the estimator for None before use."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]


def release_later(pc: RTCPeerConnection) -> None:
    """After ``pc`` was closed: in ``RELEASE_DELAY_S``, break its cycles (see the module's docstring)."""
    asyncio.get_running_loop().call_later(RELEASE_DELAY_S, release, pc)


def released(pc: RTCPeerConnection) -> bool:
    """``pc`` has been hollowed out by :func:`release`."""
    return pc.connectionState == "closed" and getattr(pc, "_RTCPeerConnection__configuration", None) is None


def release(pc: RTCPeerConnection) -> None:
    """Hollow out a closed peer, its transceivers, senders, receivers, transports and ICE connection (nobody
    may use them again: they are closed); each still answers its state (``connectionState``...) and
    ``close()``. Idempotent; a peer not closed is left as it is."""
    if pc.connectionState != "closed":
        return
    try:
        owned = _owned(pc)
        pc.remove_all_listeners()
        for item in (*owned, pc):
            _hollow(item)
    except Exception:  # a changed aiortc: the collector frees it all the same, later
        log.debug("could not release a closed peer connection", exc_info=True)


def _hollow(item: Any) -> None:
    """Let go of what ``item`` references, keeping every attribute readable: states, the closed flag and locks
    (an event emitted late still takes its emitter's lock) stay, containers are emptied, anything else becomes
    None (a late reader finds a closed, empty object)."""
    attributes = vars(item)
    for name, value in attributes.items():
        if "state" in name.lower() or name.endswith(("__isClosed", "_lock")):
            continue
        attributes[name] = type(value)() if isinstance(value, (list, dict, set, deque)) else None


def _owned(pc: RTCPeerConnection) -> list[Any]:
    """The objects that belong to ``pc`` alone (never shared ones: configuration, codecs, certificates)."""
    owned: list[Any] = []
    ice = list(pc._RTCPeerConnection__iceTransports)  # type: ignore[attr-defined]
    owned.extend(pc._RTCPeerConnection__dtlsTransports)  # type: ignore[attr-defined]
    for transport in ice:
        owned.append(transport)
        gatherer = transport.iceGatherer
        owned.append(gatherer)
        connection = getattr(gatherer, "_connection", None)
        if connection is not None:
            owned.append(connection)
            owned.extend(getattr(connection, "_protocols", ()))
    for transceiver in pc.getTransceivers():
        owned.extend((transceiver, transceiver.sender, transceiver.receiver))
    if pc.sctp is not None:
        owned.append(pc.sctp)
    return [item for item in owned if hasattr(item, "__dict__")]
