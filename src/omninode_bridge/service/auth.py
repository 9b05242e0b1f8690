"""Bearer tokens with two roles: ``client`` (lock operations and reads) and ``admin``
(also force-release). With no token configured every caller is admin, and the
server refuses to bind anything but loopback unless told to (see ``server.py``)."""

from __future__ import annotations

import hmac
from enum import Enum

from fastapi import Request

from omninode_bridge.locks.errors import ForbiddenError, UnauthorizedError


class Role(str, Enum):
    CLIENT = "client"
    ADMIN = "admin"


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` against configured tokens (constant time)."""

    def __init__(self, client_tokens: tuple[str, ...], admin_tokens: tuple[str, ...]) -> None:
        self._client = tuple(t.encode() for t in client_tokens)
        self._admin = tuple(t.encode() for t in admin_tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._client or self._admin)

    def role_of(self, header: str | None) -> Role:
        if not self.enabled:
            return Role.ADMIN
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("a bearer token is required (Authorization: Bearer <token>)")
        given = token.strip().encode()
        # compare against every token so timing does not tell which list matched
        is_admin = any([hmac.compare_digest(given, t) for t in self._admin])
        is_client = any([hmac.compare_digest(given, t) for t in self._client])
        if is_admin:
            return Role.ADMIN
        if is_client:
            return Role.CLIENT
        raise UnauthorizedError("the bearer token is not valid")

    def require(self, request: Request, role: Role = Role.CLIENT) -> Role:
        got = self.role_of(request.headers.get("authorization"))
        if role is Role.ADMIN and got is not Role.ADMIN:
            raise ForbiddenError("this operation needs an admin token")
        return got
