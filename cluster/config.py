"""The ``[cluster]`` section of the one configuration tree (``gateway.config`` composes and validates it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    # Worker processes on this host (`serve --workers N|auto`); more than one needs redis_url.
    workers: int = 1
    # Redis holding the node and worker registry, room ownership and room events; empty: one worker, in memory.
    redis_url: str = ""
    # This node's name in the registry; empty: the host name.
    node_id: str = ""
    # How other workers and nodes reach this node's internal API: worker 0 at this URL, worker i at its port + i.
    advertise_url: str = "http://127.0.0.1:9400"
    # This node's own public base URL (e.g. https://node-a.live.example.com), for the opt-in WHIP redirect
    # (POST /whip/{room}?redirect=307): an encoder asking for it is sent to the node of the room's origin.
    # Empty: this node never is a redirect's target (offers are relayed, as always).
    node_url: str = ""
    # Where the internal API listens (an address only the cluster can reach: loopback or a private network).
    internal_host: str = "127.0.0.1"
    # Viewers one worker takes in a room before the room's further viewers go to edges; 0: the process capacity.
    worker_viewer_capacity: int = 0
    # UDP ports for media on this host, split evenly between its workers; 0-0: any free port.
    udp_port_min: int = 0
    udp_port_max: int = 0
    # Registry heartbeats, and how old a worker's may be before it gets no new rooms.
    heartbeat_interval_s: float = 2.0
    stale_after_s: float = 5.0
    # An edge drops a room this long after its last viewer left.
    edge_linger_s: float = 60.0
