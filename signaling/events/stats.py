"""Counters of the room-event plane, read by /metrics, /api/stats and the dashboard."""

from __future__ import annotations

EventStats = dict[str, int]

KEYS = (
    "messages_in",  # client frames received
    "messages_out",  # frames queued to sockets
    "dropped_slow",  # sockets cut off as too slow: a full send queue not drained for a second, or a runaway one
    "rate_limited",  # client frames refused for their rate
    "errors",  # client frames refused for any reason
    "sockets",  # open room sockets
    "writer_errors",  # frames a socket's writer failed to send (logged once per socket)
    "internal_errors",  # client frames whose handling raised something other than a protocol error
    "quality_clamped",  # quality reports claiming more than the wall clock allows
    # Cluster only (cluster/events_bus.py): room events across workers.
    "cluster_forwarded",  # items sent to another worker (frames, presence, events for rooms decided there)
    "cluster_resent",  # times a worker sent again what another did not acknowledge
    "cluster_refilled",  # events an owner appended again to a stream Redis had lost
    "cluster_duplicates",  # items and events received twice and skipped
    "cluster_gaps",  # events a follower never got (lost beyond the owner's backlog)
    "cluster_lost",  # events decided here that another owner took over before they were appended
    "cluster_dropped",  # items and events dropped because a bounded backlog was full
    "cluster_taken_over",  # rooms whose events this worker started to decide
    "cluster_handed_off",  # rooms whose events this worker handed to another
    "cluster_resynced",  # sockets welcomed again: the room's state became known after they joined (Redis away)
)


def new_stats() -> EventStats:
    return dict.fromkeys(KEYS, 0)
