"""aiortc internals the load clients need; to be moved into relay/aiortc_bridge.py.

Kept apart on purpose: this is the only file in loadtests/ that touches
private aiortc (1.16) attributes, so an aiortc upgrade has one place to look.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpSender


def route_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Call ``on_request`` whenever the remote peer sends PLI or FIR for ``sender``.

    aiortc's ``RTCRtpSender._handle_rtcp_packet`` answers PLI/FIR by calling
    ``self._send_keyframe()``, which only sets a flag for its own encoder; a
    track that returns pre-encoded ``av.Packet`` s never sees it. Wrapping the
    method on the instance forwards the request to the track.
    """
    original: Callable[[], None] = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        on_request()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
