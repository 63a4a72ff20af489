"""DTLS transport details: who is the DTLS server, and right-sized SRTP contexts on every transport."""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport

from aiortc_bridge.srtp import SrtpContext


def prefer_dtls_server(pc: RTCPeerConnection) -> None:
    """After applying a remote offer, answer ``a=setup:passive`` where the offer allows it.

    As DTLS client aiortc offers only ECDHE-ECDSA suites; encoders with RSA certificates
    (GStreamer's webrtcbin) then fail with "no shared cipher". As server it accepts both.
    """
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is not None and transport._role == "auto":
            transport._set_role("server")


def dtls_transport(pc: RTCPeerConnection) -> RTCDtlsTransport | None:
    """The (BUNDLEd) DTLS transport of a connection, once negotiated."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is not None:
            return transport
    return None


def tx_srtp(transport: RTCDtlsTransport) -> SrtpContext | None:
    """The sending SRTP context of a connected transport (None before DTLS completes)."""
    context: Any = getattr(transport, "_tx_srtp", None)
    return context if isinstance(context, SrtpContext) else None


def rx_srtp(transport: RTCDtlsTransport) -> SrtpContext | None:
    context: Any = getattr(transport, "_rx_srtp", None)
    return context if isinstance(context, SrtpContext) else None


_installed = False


def install_srtp_contexts() -> None:
    """Every DTLS transport set up from now on gets :class:`SrtpContext` in both directions."""
    global _installed
    if _installed:
        return
    _installed = True
    original = RTCDtlsTransport._setup_srtp

    def setup_srtp(self: RTCDtlsTransport) -> None:
        original(self)
        rx, tx = getattr(self, "_rx_srtp", None), getattr(self, "_tx_srtp", None)
        if rx is not None and not isinstance(rx, SrtpContext):
            self._rx_srtp = SrtpContext(rx)  # type: ignore[assignment]
        if tx is not None and not isinstance(tx, SrtpContext):
            self._tx_srtp = SrtpContext(tx)  # type: ignore[assignment]

    RTCDtlsTransport._setup_srtp = setup_srtp  # type: ignore[method-assign]
