"""JWT access tokens with a room grant (HS256, via pyjwt)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ROLES = ("viewer", "guest", "host", "admin")
# A role may do what every role before it may do (admin: everything, in any room).
_RANK = {role: i for i, role in enumerate(ROLES)}


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
    def __init__(self, secret: str, issuer: str, default_ttl: int, leeway: int = 5) -> None:
        self._secret = secret
        self._issuer = issuer
        self._default_ttl = default_ttl
        self._leeway = leeway

    def mint(self, room: str, role: str, identity: str | None = None, ttl: int | None = None,
             scope: str = "") -> str:
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
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Grant:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        room, role, sub = claims.get("room"), claims.get("role"), claims.get("sub")
        if not isinstance(room, str) or not room or role not in ROLES or not isinstance(sub, str):
            raise AuthError("invalid token: missing room, role or subject grant")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise AuthError("invalid token: scope must be a string")
        return Grant(room=room, role=role, identity=sub, expires_at=int(claims["exp"]), scope=scope)


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`AuthError`."""
    if not header:
        raise AuthError("missing Authorization: Bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()
