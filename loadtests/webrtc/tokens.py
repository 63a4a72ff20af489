"""Where our clients get access tokens: a shared secret, a command, or a dev gateway's /dev/token.

A load run against a production gateway mints its own tokens in each agent process, with the
gateway's secret (:class:`SecretTokenSource`, the claims :class:`signaling.auth.TokenService`
mints and checks: iss, sub, room, role, iat, exp) or from a command that prints one
(:class:`CommandTokenSource`, e.g. ``cherry-gateway token --config gateway.toml`` or a site's own
token service). Only a ``--dev`` gateway hands them out over HTTP (:class:`DevTokenSource`).
Which one a process uses comes from its command line: :mod:`loadtests.webrtc.token_options`.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol

import aiohttp
import jwt

from loadtests.webrtc.signaling_client import SignalingError, fetch_dev_token
from loadtests.webrtc.token_options import DEFAULT_ISSUER, TokenError

# Minted load tokens outlive every profile (soak: an hour), so a session's DELETE at the end of a
# run still carries a valid token.
LOAD_TOKEN_TTL = 4 * 3600

__all__ = ["CommandTokenSource", "DevTokenSource", "SecretTokenSource", "TokenError", "TokenSource", "describe_refusal",
           "is_refusal", "mint"]


class TokenSource(Protocol):
    """Gives a token for a room, a role and an identity (None: the source picks one)."""

    description: str

    async def token(self, room: str, role: str, identity: str | None = None) -> str: ...


def mint(secret: str, issuer: str, room: str, role: str, identity: str | None = None,
         ttl: int = LOAD_TOKEN_TTL) -> str:
    """An HS256 JWT with the claims the gateway checks (``tests/load/test_tokens.py`` keeps them in step)."""
    now = int(time.time())
    claims = {"iss": issuer, "sub": identity or f"{role}-{uuid.uuid4().hex[:8]}", "room": room, "role": role,
              "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


class SecretTokenSource:
    """Mints tokens in this process with the gateway's secret: no request, no round trip."""

    def __init__(self, secret: str, issuer: str = DEFAULT_ISSUER, ttl: int = LOAD_TOKEN_TTL,
                 description: str = "a secret") -> None:
        if not secret:
            raise TokenError("empty secret")
        self._secret = secret
        self._issuer = issuer
        self._ttl = ttl
        self.description = description

    async def token(self, room: str, role: str, identity: str | None = None) -> str:
        return mint(self._secret, self._issuer, room, role, identity, self._ttl)


class CommandTokenSource:
    """Runs ``command --room R --role ROLE --identity ID`` and takes the JWT it prints.

    One process per distinct (room, role, identity), a few at a time; a token is reused until a
    minute before it expires. A command that fails, times out or prints no JWT raises
    :class:`TokenError` with its exit code and the end of its stderr.
    """

    CONCURRENCY = 4

    def __init__(self, command: str, timeout: float = 30.0) -> None:
        self._argv = shlex.split(command)
        if not self._argv:
            raise TokenError("--token-command is empty")
        self._timeout = timeout
        self._cache: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._gate: asyncio.Semaphore | None = None
        self.description = f"token command {command!r}"
        self.runs = 0

    async def token(self, room: str, role: str, identity: str | None = None) -> str:
        identity = identity or f"{role}-{uuid.uuid4().hex[:8]}"
        key = (room, role, identity)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.time() + 60:
            return cached[0]
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.CONCURRENCY)
        async with self._gate:
            token = await self._run(["--room", room, "--role", role, "--identity", identity])
        self._cache[key] = (token, _expires_at(token))
        return token

    async def _run(self, args: list[str]) -> str:
        self.runs += 1
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise TokenError(f"{self.description} could not start: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise TokenError(f"{self.description} gave no token within {self._timeout:.0f} s") from exc
        token = out.decode(errors="replace").strip()
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip()[-300:] or "no message"
            raise TokenError(f"{self.description} exited with {process.returncode}: {tail}")
        if token.count(".") != 2 or any(c.isspace() for c in token):
            raise TokenError(f"{self.description} printed no JWT: {token[:80]!r}")
        return token


def _expires_at(token: str) -> float:
    """The token's ``exp`` (not verified: the gateway does that); 0 when it has none."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return 0.0
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) else 0.0


class DevTokenSource:
    """``GET /dev/token`` of a ``--dev`` gateway; a gateway without it is a set-up error."""

    def __init__(self, base_url: str, http: Callable[[], aiohttp.ClientSession]) -> None:
        self._base_url = base_url
        self._http = http
        self.description = f"{base_url.rstrip('/')}/dev/token"

    async def token(self, room: str, role: str, identity: str | None = None) -> str:
        try:
            return await fetch_dev_token(self._http(), self._base_url, room, role, identity)
        except SignalingError as exc:
            if exc.status == 404:
                raise TokenError("GET /dev/token answered 404: the gateway is not in --dev mode; give the "
                                 "client a token source: --secret-env NAME, --secret-file PATH or --token-command "
                                 "CMD") from exc
            raise TokenError(f"GET /dev/token answered {exc.status}: {exc.body[:120]}") from exc


def is_refusal(exc: BaseException) -> bool:
    """The gateway refused a token (401/403 on WHIP, WHEP or a room socket)."""
    status = exc.status if isinstance(exc, (SignalingError, aiohttp.ClientResponseError)) else None
    return status in (401, 403)


def describe_refusal(where: str, exc: BaseException) -> str:
    """A constant-ish line for a refusal: ``WHEP 401 unauthorized: invalid token: ...``."""
    if isinstance(exc, SignalingError):
        code, message = _error_body(exc.body)
        return f"{where} {exc.status} {code}: {message}" if code else f"{where} {exc.status}: {exc.body[:120]}"
    if isinstance(exc, aiohttp.ClientResponseError):  # a refused WebSocket handshake: no body to read
        try:
            return f"{where} {exc.status} {HTTPStatus(exc.status).phrase.lower()}"
        except ValueError:
            return f"{where} {exc.status}"
    return f"{where}: {exc}"


def _error_body(body: str) -> tuple[str, str]:
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("code", "")), str(error.get("message", ""))[:120]
    except (ValueError, AttributeError):
        return "", ""

