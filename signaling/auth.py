"""JWT access tokens with a room grant (HS256, via pyjwt), and where their secrets come from.

Tokens are minted with the current secret and verified with the current one or any previous one,
so a secret can be rotated without cutting anyone off: run with the new secret as current and the
old one in ``auth.previous_secrets`` for as long as old tokens live, then drop the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from signaling.config import AuthConfig

ROLES = ("viewer", "guest", "host", "admin")
# A role may do what every role before it may do (admin: everything, in any room).
_RANK = {role: i for i, role in enumerate(ROLES)}
# Room names in URLs and grants: 1-64 characters, letters, digits, '_', '-', '.', starting with a
# letter or digit.
ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROOM_NAME_RULE = "1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit"
MAX_IDENTITY_LENGTH = 128
# The display name claim ("name", as in OpenID Connect): what chat shows instead of the identity.
MAX_NAME_LENGTH = 64
# HS256 keys shorter than the hash output are guessable offline from one captured token.
MIN_SECRET_LENGTH = 32
# Dev mode with several workers: the supervisor's per-run secret, so a /dev/token of any worker works on all.
# Read only in dev mode and only when no secret is configured; outside dev mode it is ignored.
DEV_SECRET_ENV = "CHERRY_DEV_SECRET"


class AuthError(Exception):
    """Token missing, malformed, expired or badly signed (HTTP 401)."""


class Forbidden(Exception):
    """Valid token without the grant this request needs (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Grant:
    room: str
    role: str
    identity: str
    expires_at: int
    scope: str = ""  # "pk": minted by the gateway for a PK partner's view, valid while the link lasts
    name: str = ""  # display name; empty: show the identity

    def allows(self, room: str, roles: tuple[str, ...]) -> None:
        """Raise :class:`Forbidden` unless this grant covers ``room`` with one of ``roles``."""
        if self.role == "admin":
            return
        if self.room != room:
            raise Forbidden(f"token grants room {self.room!r}, not {room!r}")
        if self.role not in roles:
            raise Forbidden(f"role {self.role!r} may not do this (needs {' or '.join(roles)})")

    def at_least(self, room: str, role: str) -> None:
        """Raise :class:`Forbidden` unless this grant is ``role`` or higher for ``room``."""
        self.allows(room, tuple(r for r in ROLES if _RANK[r] >= _RANK[role]))


class TokenService:
    """Mints with the current secret; verifies with the current or any previous one."""

    def __init__(self, secret: str, issuer: str, default_ttl: int, leeway: int = 5,
                 previous: Sequence[str] = (), max_ttl: int = 86400) -> None:
        self._secret = secret
        self._keys = (secret, *previous)
        self._issuer = issuer
        self._default_ttl = default_ttl
        self._leeway = leeway
        self.max_ttl = max_ttl

    def rekey(self, secret: str, previous: Sequence[str] = ()) -> bool:
        """Mint with ``secret`` and verify with it or ``previous`` from now on (SIGHUP reload, gateway/reload.py);
        True if that changed anything. Tokens already verified (open sessions, sockets) are not looked at again."""
        keys = (secret, *previous)
        changed = keys != self._keys
        self._secret, self._keys = secret, keys
        return changed

    def derive_keys(self, label: str) -> tuple[bytes, ...]:
        """Keys for another purpose (the cluster's internal API), derived from the current secret and the
        previous ones, so the secret itself never leaves this object and rotates with it."""
        return tuple(hmac.new(key.encode(), label.encode(), hashlib.sha256).digest() for key in self._keys)

    def mint(self, room: str, role: str, identity: str | None = None, ttl: int | None = None,
             scope: str = "", name: str = "") -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if not room:
            raise ValueError("room must not be empty")
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "sub": identity or f"{role}-{uuid.uuid4().hex[:8]}",
            "room": room,
            "role": role,
            "iat": now,
            "exp": now + (ttl if ttl is not None else self._default_ttl),
        }
        if scope:
            claims["scope"] = scope
        if name:
            check_name(name)
            claims["name"] = name
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Grant:
        claims = self._decode(token)
        room, role, sub = claims.get("room"), claims.get("role"), claims.get("sub")
        if not isinstance(room, str) or not room or role not in ROLES or not isinstance(sub, str):
            raise AuthError("invalid token: missing room, role or subject grant")
        if not 1 <= len(sub) <= MAX_IDENTITY_LENGTH or len(room) > 64:
            raise AuthError(f"invalid token: sub must be 1-{MAX_IDENTITY_LENGTH} characters, room at most 64")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise AuthError("invalid token: scope must be a string")
        name = claims.get("name", "")
        try:
            check_name(name)
        except ValueError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return Grant(room=room, role=role, identity=sub, expires_at=int(claims["exp"]), scope=scope, name=name)

    def _decode(self, token: str) -> dict[str, Any]:
        # Only a bad signature moves on to the next key: a token that one key verifies but that is
        # expired, or has the wrong issuer, is refused for that reason.
        for key in self._keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=["HS256"],
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "sub", "iss"]},
                )
                return claims
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError as exc:
                raise AuthError("token expired") from exc
            except jwt.InvalidTokenError as exc:
                raise AuthError(f"invalid token: {exc}") from exc
        raise AuthError("invalid token: signature verification failed")


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`AuthError`."""
    if not header:
        raise AuthError("missing Authorization: Bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def check_name(name: object) -> None:
    """ValueError unless ``name`` is a display name: a string of at most MAX_NAME_LENGTH printable characters."""
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"name must be at most {MAX_NAME_LENGTH} characters")
    if name != name.strip() or any(unfit_in_shown_text(c) for c in name):
        raise ValueError("name must hold no control, surrogate or bidi-override characters and no leading or "
                         "trailing spaces")


# Direction overrides and isolates would let a name reverse the text shown after it in a chat line.
_BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))


def unfit_in_shown_text(char: str) -> bool:
    """A character text shown to others (a name, a room's title or tags) may not hold."""
    # Joiners (U+200C/D, in Persian names and emoji sequences) and no-break spaces are fine; controls are not.
    return unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS


def check_ttl(ttl: int, max_ttl: int) -> None:
    """ValueError unless a requested token lifetime is 1 to ``max_ttl`` seconds (``auth.max_ttl``)."""
    if not 1 <= ttl <= max_ttl:
        raise ValueError(f"ttl must be from 1 to {max_ttl} seconds (auth.max_ttl)")


# -- secrets ---------------------------------------------------------------------------------


class SecretError(ValueError):
    """An ``auth`` secret setting that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Secrets:
    current: str
    previous: tuple[str, ...] = ()
    # True when nothing was configured and this is a per-run random secret (dev mode only).
    generated: bool = False


def _from_env(name: str, key: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None:
        raise SecretError(f"{key}: environment variable {name} is not set")
    if not value.strip():
        raise SecretError(f"{key}: environment variable {name} is empty")
    return value


def _from_file(path: str, key: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{key}: cannot read {path}: {exc}") from exc
    if not value:
        raise SecretError(f"{key}: {path} is empty")
    return value


def _previous(value: str, key: str, environ: Mapping[str, str]) -> str:
    if value.startswith("env:"):
        return _from_env(value[4:], key, environ)
    if value.startswith("file:"):
        return _from_file(value[5:], key)
    if not value:
        raise SecretError(f"{key}: must not be empty")
    return value


def resolve_secrets(auth: AuthConfig, dev: bool, environ: Mapping[str, str] | None = None) -> Secrets:
    """The current and previous secrets ``auth`` names, read from the environment and files.

    The current secret comes from exactly one of ``auth.secret``, ``auth.secret_env`` (a variable
    name) and ``auth.secret_file`` (surrounding whitespace stripped); ``previous_secrets`` entries
    are secrets or ``env:NAME`` / ``file:PATH``. Outside dev mode a current secret is required and
    every secret must be at least :data:`MIN_SECRET_LENGTH` characters; dev mode without one gets a
    per-run random secret (the one in :data:`DEV_SECRET_ENV` when a supervisor set it for its workers).
    Raises :class:`SecretError` naming the key.
    """
    env = os.environ if environ is None else environ
    given = [key for key, value in (("auth.secret", auth.secret), ("auth.secret_env", auth.secret_env),
                                    ("auth.secret_file", auth.secret_file)) if value]
    if len(given) > 1:
        raise SecretError(f"{' and '.join(given)}: set only one of auth.secret, auth.secret_env, auth.secret_file")
    previous = tuple(_previous(value, f"auth.previous_secrets[{i}]", env)
                     for i, value in enumerate(auth.previous_secrets))
    if not given:
        if not dev:
            raise SecretError("auth.secret: a secret is required outside --dev: set auth.secret, "
                              "auth.secret_env or auth.secret_file")
        shared = env.get(DEV_SECRET_ENV)
        if shared is not None:  # the workers of one dev host: one per-run secret, from their supervisor
            if len(shared) < MIN_SECRET_LENGTH:
                raise SecretError(f"{DEV_SECRET_ENV}: must be at least {MIN_SECRET_LENGTH} characters")
            return Secrets(shared, previous, generated=True)
        return Secrets(secrets.token_urlsafe(32), previous, generated=True)
    key = given[0]
    if key == "auth.secret_env":
        current = _from_env(auth.secret_env, key, env)
    elif key == "auth.secret_file":
        current = _from_file(auth.secret_file, key)
    else:
        current = auth.secret
    if not dev:
        for name, value in ((key, current), *((f"auth.previous_secrets[{i}]", v) for i, v in enumerate(previous))):
            if len(value) < MIN_SECRET_LENGTH:
                raise SecretError(f"{name}: must be at least {MIN_SECRET_LENGTH} characters (or run with --dev), "
                                  f"got {len(value)}")
    return Secrets(current, previous)


def token_service(auth: AuthConfig, dev: bool, environ: Mapping[str, str] | None = None) -> TokenService:
    """The gateway's and ``cherry-gateway token``'s :class:`TokenService` for this configuration."""
    resolved = resolve_secrets(auth, dev, environ)
    return TokenService(resolved.current, auth.issuer, auth.default_ttl, auth.leeway,
                        previous=resolved.previous, max_ttl=auth.max_ttl)
