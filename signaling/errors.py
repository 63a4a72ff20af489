"""HTTP errors with a JSON body, raised by handlers and rendered by one middleware."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

log = logging.getLogger("cherry.signaling")
# Set by the gateway's request-id middleware; read wherever a log line names the request.
REQUEST_ID = web.RequestKey("request_id", str)


class HttpError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal becomes ``{"error": {...}}`` and a log line; never a traceback."""
    try:
        return await handler(request)
    except HttpError as exc:
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "request=%s %s %s -> %d %s: %s", request.get(REQUEST_ID, "-"),
                request.method, request.path, exc.status, exc.code, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPRequestEntityTooLarge as exc:
        log.info("%s %s -> 413 body too large", request.method, request.path)
        return error_response(413, "body_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, code)
        return error_response(exc.status, code, exc.reason, {k: v for k, v in exc.headers.items()
                                                               if k.lower() == "allow"})
    except Exception:
        log.exception("%s %s -> 500 unexpected error", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the gateway log")
