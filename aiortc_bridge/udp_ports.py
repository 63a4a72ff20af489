"""A worker's UDP port range for media: host-candidate sockets are bound inside it, and it knows how many are free.

Pure sockets, no aioice: :mod:`aiortc_bridge.ice` decides when aioice binds through it. The pool only tracks
the ports this process bound; the kernel stays the judge (a port another program holds fails to bind and
the next one is tried), so "free" is an upper bound that is exact when the range is ours alone.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("cherry.aiortc.ports")


class UdpPortPool:
    """Ports ``first``-``last`` inclusive. Not thread-safe: one event loop binds and releases."""

    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last < 65536:
            raise ValueError(f"not a UDP port range: {first}-{last}")
        self.first = first
        self.last = last
        self._in_use: set[int] = set()
        self._reserved = 0
        # The next bind starts after the last port handed out, so a port just freed is the last one
        # reused: stray packets from its previous peer have time to stop.
        self._cursor = first

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def reserved(self) -> int:
        return self._reserved

    def free(self) -> int:
        """Ports neither bound by this process nor held for a session that is negotiating."""
        return max(0, self.size - len(self._in_use) - self._reserved)

    def bind(self, host: str) -> socket.socket:
        """A non-blocking UDP socket bound to ``host`` on a free port of the range; OSError if none is.

        The caller owns the socket and calls :meth:`release` with its port once it is closed.
        No SO_REUSEADDR/SO_REUSEPORT: two sockets must never share a media port.
        """
        family, _, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM,
                                                      flags=socket.AI_NUMERICHOST)[0]
        span = self.size
        for step in range(span):
            port = self.first + (self._cursor - self.first + step) % span
            if port in self._in_use:
                continue
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((address[0], port, *address[2:]))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue  # another program holds it
                raise
            sock.setblocking(False)
            self._in_use.add(port)
            self._cursor = port + 1 if port < self.last else self.first
            return sock
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {self.first}-{self.last} on {host}")

    def release(self, port: int) -> None:
        self._in_use.discard(port)

    @contextmanager
    def reserve(self, count: int) -> Iterator[None]:
        """Hold ``count`` ports for a session while it negotiates (its sockets are bound during negotiation).

        Admission counts the hold, so concurrent offers cannot all pass the check for the last free port.
        Once the session's sockets are bound they count as in use; until the hold ends they count twice,
        which only errs on the side of refusing.
        """
        self._reserved += count
        try:
            yield
        finally:
            self._reserved -= count
