"""Keeping the cycle collector's pauses short in a process full of aiortc peers.

CPython's full (generation 2) collection stops the event loop while it walks every tracked object. A
worker's heap is the imports (aiortc, aiohttp, av: ~75k objects) plus its peers' state, and a closed
peer's state is a reference cycle that only such a pass frees. With 50 viewers one pass took 110-145 ms
here (`make bench`'s TTFF step, keyframes only on PLI): every viewer got one frame that late, which a
player shows as a freeze. Two things keep it short:

* :func:`freeze_start_up_heap`: what start-up built lives as long as the process, so it is moved out of
  the collector's sight once (``gc.freeze``) and never walked again;
* :func:`drop_bitrate_estimator`: aiortc gives every video receiver a bandwidth estimator whose rate
  counter is 1000 objects, also on a send-only transceiver (a gateway's viewer) or a receiver whose
  packets bypass aiortc (a lean load viewer), where it never sees a packet.
"""

from __future__ import annotations

import gc

from aiortc import RTCRtpReceiver


def freeze_start_up_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; the number exempted."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def drop_bitrate_estimator(receiver: RTCRtpReceiver) -> None:
    """For a receiver whose own RTP path never runs: aiortc checks the estimator for None before use."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
