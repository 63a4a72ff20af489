"""What every response carries and who may reach the operations endpoints.

- Request ids: a client's ``X-Request-Id`` is echoed and logged only when short and plain, so nobody can
  stuff a log line or a response header through it; otherwise the gateway makes its own.
- Security headers on every response; pages additionally get a Content-Security-Policy that only lets
  the gateway's own scripts run and no site frame them.
- Operations endpoints (``/metrics``, ``/dashboard``): on their own listener (``operations.port``), or on
  the public port in dev mode or behind a bearer token; nowhere else.
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from signaling.errors import REQUEST_ID, HttpError

log = logging.getLogger("cherry.gateway.http")

SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Inline styles stay allowed (the pages set a few style attributes); scripts only from the gateway itself.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
               "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")
OPERATIONS_PREFIXES = ("/metrics", "/dashboard")
# Reachable on the operations listener besides the operations endpoints: probes, the dashboard's scripts, and what
# its admin actions call from the same origin (the admin API needs an admin grant wherever it is served; /dev/token
# exists in dev mode only).
OPERATIONS_EXTRAS = ("/healthz", "/readyz", "/static/", "/api/", "/dev/token")
# The dashboard's HTML holds no data: a browser opening it cannot send a bearer token, its scripts then do.
OPERATIONS_PAGE = "/dashboard"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id(header: str | None) -> str:
    return header if header is not None and SAFE_REQUEST_ID.fullmatch(header) else uuid.uuid4().hex[:12]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = request_id(request.headers.get("X-Request-Id"))
    response = await handler(request)
    response.headers["X-Request-Id"] = request[REQUEST_ID]
    return response


def page_policy(token_url: str = "") -> str:
    """The pages' policy; an app's token endpoint on another origin (``pages.token_url``) may be fetched too."""
    parts = urlsplit(token_url)
    if not parts.netloc:
        return PAGE_POLICY
    return PAGE_POLICY.replace("connect-src 'self'", f"connect-src 'self' {parts.scheme}://{parts.netloc}")


def security_headers(policy: str = PAGE_POLICY) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """``on_response_prepare``: errors, files and WebSocket upgrades included."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if (response.content_type or "").startswith("text/html"):
            headers.setdefault("Content-Security-Policy", policy)
            headers.setdefault("X-Frame-Options", "DENY")

    return on_prepare


def is_operations_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPERATIONS_PREFIXES)


def operations_gate(*, port: int, public_allowed: bool, token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: operations endpoints only where configured, with the bearer token when there is one.

    ``port``: the operations listener of this process (0: none); ``public_allowed``: they may be served on
    the public port (dev mode, or a token guards them)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        on_operations_port = port != 0 and _local_port(request) == port
        path = request.path
        if not is_operations_path(path):
            if on_operations_port and not path.startswith(OPERATIONS_EXTRAS):
                raise HttpError(404, "not_found",
                                "the operations listener serves /metrics, /dashboard and the admin API only")
            return await handler(request)
        if not on_operations_port and (port != 0 or not public_allowed):
            raise HttpError(404, "not_found", "operations endpoints are not served here (operations.port, "
                                              "operations.token_env; see docs/deployment.md)")
        if token and path != OPERATIONS_PAGE:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise HttpError(401, "unauthorized", "operations endpoints need Authorization: Bearer TOKEN",
                                {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return gate


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
