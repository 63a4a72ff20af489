"""The internal API between workers: a session request relayed to the worker that holds the session.

Signaling terminates on any worker. That worker verifies the client's token, then relays the
request here on the holding worker with the verified grant: the client's token never leaves the
worker it was sent to. Every internal request is signed (HMAC-SHA256 over the time, method, path and
body, with a key derived from the cluster's auth secret) and must be fresh; in production the internal
API listens on loopback or a private network only (``cluster.internal_host``), and across nodes goes
over TLS or that private network.

Errors come back as the JSON error body with the status the holding worker chose, and are re-raised on
the receiving worker as the same ``HttpError``: a client sees exactly what it would have seen had it
reached the holding worker itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

import aiohttp
from aiohttp import web

from relay.errors import RelayError
from relay.participant import Grant
from relay.pipe import PIPE_IDENTITY, PIPE_ROLE, Exchange
from relay.room import Listing
from signaling.broker import LocalBroker, Mismatch, NotYours, Opened
from signaling.errors import HttpError, error_response, relay_error

log = logging.getLogger("cherry.cluster.internal")

LABEL = "cherry-internal-api-v1"
MAX_SKEW_S = 30.0  # a signed request older (or newer) than this is refused: no replay from old captures
MAX_BODY = 256 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=15.0, connect=3.0)


def sign(key: bytes, stamp: str, method: str, path: str, body: bytes) -> str:
    message = b"\n".join([stamp.encode(), method.encode(), path.encode(), body])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(keys: Sequence[bytes], stamp: str, signature: str, method: str, path: str, body: bytes,
           now: float | None = None) -> bool:
    try:
        age = abs((now if now is not None else time.time()) - float(stamp))
    except ValueError:
        return False
    if age > MAX_SKEW_S:
        return False
    return any(hmac.compare_digest(sign(key, stamp, method, path, body), signature) for key in keys)


def _grant(data: Any) -> Grant:
    if not isinstance(data, dict):
        raise HttpError(400, "bad_request", "grant must be an object")
    try:
        return Grant(str(data["room"]), str(data["identity"]), str(data["role"]), str(data.get("display_name", "")),
                     str(data.get("scope", "")))
    except KeyError as exc:
        raise HttpError(400, "bad_request", f"grant lacks {exc}") from exc


def _listing(data: Any) -> Listing | None:
    """A listing another worker checked already (signaling.listing): only its shape is checked again."""
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("tags", []), list):
        raise HttpError(400, "bad_request", "listing must be an object with a list of tags")
    tags = tuple(str(t) for t in data.get("tags", []))
    return Listing(str(data.get("title", "")), str(data.get("category", "")), tags)


def _field(body: dict[str, Any], name: str, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise HttpError(400, "bad_request", f"{name!r} must be a string")
    return value


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PkApply = Callable[[dict[str, str | None]], Awaitable[None]]  # cluster.pk_media.PkMedia.apply
AdminApply = Callable[[dict[str, Any]], Awaitable[Any]]  # signaling.admin.LocalAdmin.apply
# Read-only and without secrets: a scraper or a load balancer's probe needs no signature.
UNSIGNED = ("/internal/healthz", "/metrics")


class InternalServer:
    """The routes other workers call; everything they ask for happens on this worker's ``LocalBroker``."""

    def __init__(self, broker: LocalBroker, keys: Sequence[bytes], retry_after: int, client: InternalClient,
                 worker_id: str, pk: PkApply | None = None, admin: AdminApply | None = None) -> None:
        self._broker = broker
        self._pk = pk
        self._admin = admin
        self.metrics: Callable[[], web.Response] | None = None  # this worker's /metrics (gateway.operations)
        self._keys = tuple(keys)
        self._retry_after = retry_after
        self._client = client
        self._worker_id = worker_id
        self.app = web.Application(middlewares=[self._authenticate], client_max_size=MAX_BODY)
        self.app.router.add_post("/internal/open", self._open)
        self.app.router.add_post("/internal/pipe", self._pipe)
        self.app.router.add_post("/internal/trickle", self._trickle)
        self.app.router.add_post("/internal/end", self._end)
        self.app.router.add_post("/internal/pk", self._pk_link)
        self.app.router.add_post("/internal/admin", self._admin_op)
        self.app.router.add_get("/internal/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)

    def rekey(self, keys: Sequence[bytes]) -> None:
        self._keys = tuple(keys)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNSIGNED:
            return await handler(request)
        body = await request.read()
        stamp = request.headers.get("X-Cherry-Time", "")
        signature = request.headers.get("X-Cherry-Signature", "")
        if not verify(self._keys, stamp, signature, request.method, request.path_qs, body):
            log.warning("refused an internal request to %s: bad or stale signature (from %s)", request.path,
                        request.remote)
            return error_response(401, "unauthorized", "internal requests must be signed and fresh")
        try:
            return await handler(request)
        except RelayError as exc:
            raise_as = relay_error(exc, self._retry_after)
            return error_response(raise_as.status, raise_as.code, raise_as.message, raise_as.headers)
        except HttpError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except NotYours as exc:
            return error_response(403, "forbidden", str(exc))
        except Mismatch as exc:
            return error_response(412, "etag_mismatch", str(exc))

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise HttpError(400, "bad_json", "internal request body must be JSON") from exc
        if not isinstance(body, dict):
            raise HttpError(400, "bad_json", "internal request body must be an object")
        return body

    async def _open(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        endpoint = _field(body, "endpoint")
        if endpoint not in ("whip", "whep"):
            raise HttpError(400, "bad_request", "endpoint must be whip or whep")
        grant, sdp = _grant(body.get("grant")), _field(body, "sdp") or ""
        edge = body.get("edge")
        if endpoint == "whep" and isinstance(edge, dict):
            opened = await open_on_edge(self._broker, self._client, self._worker_id, grant, sdp,
                                        str(edge.get("origin", "")), str(edge.get("origin_url", "")))
        else:
            opened = await self._broker.open(endpoint, grant, sdp, _listing(body.get("listing")))
        return web.json_response(asdict(opened), status=201)

    async def _pipe(self, request: web.Request) -> web.Response:
        """An edge worker pulls this room (this worker is its origin)."""
        body = await self._body(request)
        session = await self._broker.relay.open_pipe(_grant(body.get("grant")), _field(body, "sdp") or "")
        return web.json_response({"answer": session.answer, "session": session.session_id}, status=201)

    async def _trickle(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        await self._broker.trickle(_field(body, "endpoint") or "", _field(body, "room") or "",
                                   _field(body, "ref") or "", _grant(body.get("grant")),
                                   _field(body, "fragment") or "", _field(body, "if_match", optional=True))
        return web.Response(status=204)

    async def _end(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        await self._broker.end(_field(body, "endpoint") or "", _field(body, "room") or "", _field(body, "ref") or "",
                               _grant(body.get("grant")))
        return web.Response(status=200)

    async def _pk_link(self, request: web.Request) -> web.Response:
        """A PK battle's coordinator links (or unlinks) a room this worker is the origin of."""
        body = await self._body(request)
        action = _field(body, "action")
        if action not in ("link", "unlink") or self._pk is None:
            raise HttpError(400, "bad_request", "action must be link or unlink")
        payload = {"action": action, "room": _field(body, "room")}
        if action == "link":
            for name in ("partner", "partner_origin", "partner_url"):
                payload[name] = _field(body, name)
            payload["partner_host"] = _field(body, "partner_host", optional=True)
        await self._pk(payload)
        return web.Response(status=204)

    async def _admin_op(self, request: web.Request) -> web.Response:
        """One admin API operation asked by the worker an operator called, for what this worker holds."""
        if self._admin is None:
            raise HttpError(404, "not_found", "no admin API on this worker")
        return web.json_response(await self._admin(await self._body(request)))

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return error_response(404, "not_found", "metrics are disabled on this worker")
        return self.metrics()


class WorkerUnreachable(HttpError):
    """No connection to the worker at all: nothing was delivered, so the request may go elsewhere."""

    def __init__(self, base_url: str, exc: Exception) -> None:
        super().__init__(503, "worker_unavailable", f"the worker at {base_url} cannot be reached: {exc}",
                         {"Retry-After": "2"})
        self.base_url = base_url


class InternalClient:
    """Calls another worker's internal API, signed; errors come back as the same HttpError."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._http: aiohttp.ClientSession | None = None

    def rekey(self, key: bytes) -> None:
        self._key = key

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def call(self, base_url: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        stamp = f"{time.time():.3f}"
        headers = {"Content-Type": "application/json", "X-Cherry-Time": stamp,
                   "X-Cherry-Signature": sign(self._key, stamp, "POST", path, body)}
        try:
            async with self._session().post(base_url.rstrip("/") + path, data=body, headers=headers) as response:
                text = await response.text()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            raise WorkerUnreachable(base_url, exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpError(503, "worker_unavailable", f"the worker holding this session did not answer: {exc}",
                            {"Retry-After": "2"}) from exc
        try:
            data: Any = json.loads(text) if text else None
        except ValueError:
            data = None  # a worker's crash page, or something that is not a worker at all
            if status < 400:
                raise HttpError(502, "worker_error", f"the worker at {base_url} answered {path} with no JSON") from None
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            headers_back = {"Retry-After": retry_after} if retry_after else None
            raise HttpError(status, str(error.get("code", "error")), str(error.get("message", text[:200])),
                            headers_back)
        return status, data

    async def open(self, base_url: str, endpoint: str, grant: Grant, sdp: str, listing: Listing | None) -> Opened:
        _, data = await self.call(base_url, "/internal/open", {"endpoint": endpoint, "grant": asdict(grant), "sdp": sdp,
                                                               "listing": asdict(listing) if listing else None})
        return Opened(str(data["ref"]), str(data["endpoint"]), str(data["room"]), str(data["answer"]),
                      str(data["etag"]))

    async def pipe(self, base_url: str, grant: Grant, sdp: str) -> str:
        _, data = await self.call(base_url, "/internal/pipe", {"grant": asdict(grant), "sdp": sdp})
        return str(data["answer"])

    def pipe_exchange(self, base_url: str, room: str, worker_id: str) -> Exchange:
        """How worker ``worker_id`` pulls ``room`` from the origin at ``base_url``: its pipe offer there."""
        grant = Grant(room, f"{PIPE_IDENTITY}{worker_id}", PIPE_ROLE)

        async def exchange(offer: str) -> str:
            return await self.pipe(base_url, grant, offer)

        return exchange

    async def pk(self, base_url: str, payload: dict[str, Any]) -> None:
        await self.call(base_url, "/internal/pk", payload)

    async def open_edge(self, base_url: str, grant: Grant, sdp: str, origin: str, origin_url: str) -> Opened:
        _, data = await self.call(base_url, "/internal/open", {
            "endpoint": "whep", "grant": asdict(grant), "sdp": sdp,
            "edge": {"origin": origin, "origin_url": origin_url}})
        return Opened(str(data["ref"]), str(data["endpoint"]), str(data["room"]), str(data["answer"]),
                      str(data["etag"]))

    async def trickle(self, base_url: str, endpoint: str, room: str, ref: str, grant: Grant, fragment: str,
                      if_match: str | None) -> None:
        await self.call(base_url, "/internal/trickle", {"endpoint": endpoint, "room": room, "ref": ref,
                                                        "grant": asdict(grant), "fragment": fragment,
                                                        "if_match": if_match})

    async def end(self, base_url: str, endpoint: str, room: str, ref: str, grant: Grant) -> None:
        await self.call(base_url, "/internal/end", {"endpoint": endpoint, "room": room, "ref": ref,
                                                    "grant": asdict(grant)})


async def open_on_edge(broker: LocalBroker, client: InternalClient, worker_id: str, grant: Grant, sdp: str,
                       origin: str, origin_url: str) -> Opened:
    """A viewer this worker serves as an edge of its room: the pipe from the origin first, then the viewer."""
    exchange = client.pipe_exchange(origin_url, grant.room, worker_id)
    session = await broker.relay.open_edge_playback(grant, sdp, origin, exchange)
    return Opened(session.session_id, "whep", grant.room, session.answer, session.etag)
