"""Which worker this process is: its index on the node, its id in the registry, its ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from cluster.config import ClusterConfig


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Worker ``index`` of ``count`` on node ``node_id``."""

    index: int = 0
    count: int = 1
    node_id: str = ""

    @classmethod
    def of(cls, config: ClusterConfig, index: int = 0) -> WorkerSlot:
        return cls(index, config.workers, config.node_id or socket.gethostname())

    @property
    def worker_id(self) -> str:
        return f"{self.node_id}-w{self.index}"

    def internal_url(self, config: ClusterConfig) -> str:
        """Where other workers reach this one's internal API (the advertised URL, port + index)."""
        parts = urlsplit(config.advertise_url)
        port = (parts.port or (443 if parts.scheme == "https" else 80)) + self.index
        return f"{parts.scheme}://{parts.hostname}:{port}"

    def internal_port(self, config: ClusterConfig) -> int:
        parts = urlsplit(config.advertise_url)
        return (parts.port or (443 if parts.scheme == "https" else 80)) + self.index

    def udp_ports(self, config: ClusterConfig) -> tuple[int, int] | None:
        """This worker's slice of the node's media port range (None: any free port)."""
        if not config.udp_port_min:
            return None
        size = (config.udp_port_max - config.udp_port_min + 1) // self.count
        first = config.udp_port_min + self.index * size
        last = config.udp_port_max if self.index == self.count - 1 else first + size - 1
        return first, last
