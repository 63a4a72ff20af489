"""The one package that touches aiortc and aioice internals (aiortc 1.16.0, aioice 0.13.0, pylibsrtp 1.0).

Everything here leans on private attributes of those versions; an upgrade of either has to look
here and nowhere else. The gateway and our own clients (load viewers, synthetic hosts, test peers)
share it. What it provides:

* :mod:`~aiortc_bridge.guard`: every datagram on a media port is classified and bounded before
  aioice or aiortc parses it, and every packet handler runs inside a guard; drops are counted;
* :mod:`~aiortc_bridge.srtp` / :mod:`~aiortc_bridge.dtls`: SRTP with buffers sized for the packet
  (pylibsrtp's are fixed at 1500 bytes), and the answerer as DTLS server (``a=setup:passive``);
* :mod:`~aiortc_bridge.ice`: the ICE host addresses offered, the UDP port range their sockets bind
  (:mod:`~aiortc_bridge.udp_ports`, a worker's slice), remote candidates parsed safely;
* :mod:`~aiortc_bridge.codecs`: capabilities and the negotiated codec;
* :mod:`~aiortc_bridge.receiver`: ``ReceiverTap``, incoming RTP before any jitter buffer or decoder;
* :mod:`~aiortc_bridge.sender`: ``SenderPort``, an ``RTCRtpSender`` as a raw packet sink;
* :mod:`~aiortc_bridge.client`: hooks for our load clients (lean receive path, impairment).

Call :func:`install` once per process before the first peer connection.
"""

from __future__ import annotations

from aiortc_bridge.dtls import install_srtp_contexts
from aiortc_bridge.guard import install_guards


def install() -> None:
    """Apply the process-wide patches (idempotent): datagram guards and right-sized SRTP."""
    install_guards()
    install_srtp_contexts()
