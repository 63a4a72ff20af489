"""HTTP errors with a JSON body, raised by handlers and rendered by one middleware."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from relay import errors

log = logging.getLogger("cherry.signaling")
# Set by the gateway's request-id middleware; read wherever a log line names the request.
REQUEST_ID = web.RequestKey("request_id", str)
# The error code of a response built by :func:`error_response`: the metrics count errors by it.
ERROR_CODE = web.ResponseKey("error_code", str)


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
    response = web.Response(status=status, text=body, content_type="application/json", headers=headers)
    response[ERROR_CODE] = code
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every refusal the relay makes, as (status, code, whether the client should retry later).
RELAY_ERRORS: dict[type[errors.RelayError], tuple[int, str, bool]] = {
    errors.BadOffer: (400, "bad_sdp", False),
    errors.NoCommonCodec: (400, "no_common_codec", False),
    errors.BadCandidate: (400, "bad_candidate", False),
    errors.TooManyCandidates: (400, "too_many_candidates", False),
    errors.IceRestartUnsupported: (422, "ice_restart_unsupported", False),
    errors.Banned: (403, "banned", False),
    errors.NotOnMic: (403, "not_on_mic", False),
    errors.PkLinkEnded: (403, "pk_ended", False),
    errors.RoomNotLive: (404, "room_not_live", True),
    errors.UnknownSession: (404, "unknown_session", False),
    errors.HostAlreadyLive: (409, "host_already_live", False),
    errors.GuestSlotsFull: (409, "guest_slots_full", False),
    errors.RoomClosed: (409, "room_changed", False),
    errors.SessionReplaced: (409, "session_replaced", False),
    errors.PkBusy: (409, "pk_busy", False),
    errors.CapacityExceeded: (503, "capacity", True),
    errors.Overloaded: (503, "overloaded", True),
}
RETRY_AFTER = web.AppKey("retry_after", int)


def relay_error(exc: errors.RelayError, retry_after: int) -> HttpError:
    """The one mapping from a relay refusal to an HTTP error."""
    for cls in type(exc).__mro__:
        entry = RELAY_ERRORS.get(cls)  # type: ignore[call-overload]
        if entry is not None:
            status, code, retry = entry
            return HttpError(status, code, str(exc), {"Retry-After": str(retry_after)} if retry else None)
    return HttpError(409, "refused", str(exc))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal becomes ``{"error": {...}}`` and a log line; never a traceback."""
    try:
        try:
            return await handler(request)
        except errors.RelayError as relay_exc:
            raise relay_error(relay_exc, request.app.get(RETRY_AFTER, 5)) from relay_exc
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
