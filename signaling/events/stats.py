"""Counters of the room-event plane, read by /metrics, /api/stats and the dashboard."""

from __future__ import annotations

EventStats = dict[str, int]

KEYS = (
    "messages_in",  # client frames received
    "messages_out",  # frames queued to sockets
    "dropped_slow",  # sockets cut off because their send queue overflowed
    "rate_limited",  # client frames refused for their rate
    "errors",  # client frames refused for any reason
    "sockets",  # open room sockets
    "writer_errors",  # frames a socket's writer failed to send (logged once per socket)
    "internal_errors",  # client frames whose handling raised something other than a protocol error
    "quality_clamped",  # quality reports claiming more than the wall clock allows
)


def new_stats() -> EventStats:
    return dict.fromkeys(KEYS, 0)
