"""WHIP/WHEP HTTP exchanges (RFC 9725 shapes) shared by the load clients."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from yarl import URL

# Every response of a gateway names the worker that answered; worker ids are "{node}-w{index}"
# (cluster/worker.py, WorkerSlot.worker_id), and a cluster session's Location ends in "~{worker}",
# the worker holding the session (cluster/broker.py).
WORKER_HEADER = "X-Cherry-Worker"
SESSION_WORKER_SEPARATOR = "~"


def node_of(worker_id: str) -> str:
    """The node part of a worker id (``"a-w0"`` -> ``"a"``, ``"gw-west-w12"`` -> ``"gw-west"``), else the id."""
    node, sep, index = worker_id.rpartition("-w")
    return node if sep and node and index.isdigit() else worker_id


def worker_in_location(location: str) -> str | None:
    """The holding worker a session's ``Location`` names (``/whep/{room}/{id}~{worker}``), None if none."""
    last = URL(location).path.rstrip("/").rpartition("/")[2]
    _, sep, worker = last.rpartition(SESSION_WORKER_SEPARATOR)
    return worker if sep and worker else None


class SignalingError(Exception):
    """The server refused an exchange; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None,
                 worker: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = message  # the start of the server's answer (JSON error body or text)
        self.retry_after = retry_after  # seconds, from a Retry-After header (429, 503)
        self.worker = worker  # the worker that answered (X-Cherry-Worker), None if not said


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP date from a WHIP server would be unusual.
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class SessionResource:
    """The ``Location`` a WHIP/WHEP POST created, to PATCH or DELETE later."""

    url: str
    etag: str | None
    answer_sdp: str
    answered_by: str | None = None  # the worker that answered the POST (X-Cherry-Worker)

    @property
    def holder(self) -> str | None:
        """The worker holding the session: named in the Location (a cluster), else the one that answered."""
        return worker_in_location(self.url) or self.answered_by


async def fetch_dev_token(http: aiohttp.ClientSession, base_url: str, room: str, role: str,
                          identity: str | None = None, ttl: int | None = None) -> str:
    """Ask a ``--dev`` gateway for a token (``GET /dev/token``); :class:`SignalingError` if refused.

    The one place our clients (load suite, bench, tests) fetch dev tokens; anything that may run
    against a production gateway takes a :class:`loadtests.webrtc.tokens.TokenSource` instead.
    """
    query = {"room": room, "role": role}
    if identity is not None:
        query["identity"] = identity
    if ttl is not None:
        query["ttl"] = str(ttl)
    url = (URL(base_url) / "dev" / "token").with_query(query)
    async with http.get(url) as response:
        if response.status != 200:
            raise SignalingError(response.status, (await response.text())[:200])
        body = await response.json()
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        raise SignalingError(response.status, "no token in /dev/token answer")
    return token


async def post_offer(http: aiohttp.ClientSession, url: str, offer_sdp: str, token: str | None) -> SessionResource:
    """POST an SDP offer; expects ``201`` with an SDP answer and a ``Location``."""
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=offer_sdp.encode(), headers=headers) as response:
        body = await response.text()
        worker = response.headers.get(WORKER_HEADER)
        if response.status != 201:
            raise SignalingError(response.status, body[:200], _retry_after(response.headers.get("Retry-After")),
                                 worker)
        location = response.headers.get("Location")
        if not location:
            raise SignalingError(response.status, "201 without Location", worker=worker)
        # Location is usually a path; resolve it against the POST URL.
        resource = URL(url).join(URL(location))
        return SessionResource(str(resource), response.headers.get("ETag"), body, worker)


async def delete_resource(http: aiohttp.ClientSession, url: str, token: str | None) -> int:
    """DELETE a session resource; returns the status, never raises on HTTP errors."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.delete(url, headers=headers) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0
