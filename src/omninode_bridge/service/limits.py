"""Limits before any route runs.

:class:`BodyLimit`: at most ``max_body`` bytes (413 otherwise, also for chunked bodies
with no Content-Length) and valid UTF-8 (400 otherwise); the body is read once here and
replayed to the application.

:class:`RateLimiter`: a token bucket per client (its bearer token, else its address):
``rate`` requests a second on average, bursts of ``burst``; past that 429 with
``Retry-After``. Set by ``OMNINODE_RATE_LIMIT`` (requests/s per client, ``0`` turns it
off) and ``OMNINODE_RATE_BURST`` (default: one second's worth). The default is
generous (a single benchmark client stays far below it); an operator lowers it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omninode_bridge.locks.errors import LockValidationError

MAX_BODY = 64 * 1024
DEFAULT_RATE = 5000.0  # requests a second per client
MAX_CLIENTS = 10_000  # buckets kept; full (idle) ones are dropped first
EXEMPT_PATHS = frozenset({"/health", "/metrics"})  # probes and scrapers are never refused


class BodyLimit:
    """Pure ASGI middleware; streams (SSE) pass through untouched."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope)
        if problem is not None:  # the router would decode it with replacement characters
            await _reject(send, 400, problem)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _reject(send, 413, f"request body is larger than {self.max_body} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _reject(send, 413, f"request body is larger than {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            await _reject(send, 400, f"request body is not valid UTF-8 (byte {err.start})")
            return
        # every body of this API is JSON, whatever the client declared (curl -d sends a
        # form content type): parse it as JSON so the error names the real problem
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
        scope["headers"].append((b"content-type", b"application/json"))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


def url_problem(scope: Scope) -> str | None:
    """Percent-escapes in the path or query that are not UTF-8 (two different invalid
    names would otherwise become the same lock name)."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode()
    for where, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
        try:
            unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return f"the URL {where} is not valid UTF-8 once percent-decoded"
    return None


def rate_limit_from_env(env: Mapping[str, str] = os.environ) -> tuple[float, float]:
    """``rate`` and ``burst`` from ``OMNINODE_RATE_LIMIT`` / ``OMNINODE_RATE_BURST``."""
    try:
        rate = float(env.get("OMNINODE_RATE_LIMIT", DEFAULT_RATE))
        burst = float(env.get("OMNINODE_RATE_BURST", 0) or max(rate, 1.0))
    except ValueError as err:
        raise LockValidationError(
            "OMNINODE_RATE_LIMIT and OMNINODE_RATE_BURST must be numbers", field="rate_limit"
        ) from err
    if not (math.isfinite(rate) and math.isfinite(burst)) or rate < 0 or burst < 1:
        raise LockValidationError(
            "OMNINODE_RATE_LIMIT must be >= 0 (0 turns it off) and OMNINODE_RATE_BURST >= 1",
            field="rate_limit",
        )
    return rate, burst


class RateLimiter:
    """A token bucket per bearer token (hashed: the raw token is not kept), else per peer
    address. ``rate`` 0 turns it off. The application asks :meth:`refused` first thing
    for every request (the hot path included), so no route can skip it."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, at)

    async def refused(self, scope: Scope, send: Send) -> bool:
        """True when the request was over the limit and has been answered 429."""
        if self.rate <= 0 or scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            return False
        wait = self.take(_client_key(scope))
        if wait <= 0:
            return False
        retry_after = max(1, math.ceil(wait))
        await _reject(
            send,
            429,
            f"too many requests: the limit is {self.rate:g} a second per client; retry after {retry_after} s",
            code="RATE_LIMITED",
            details={"retry_after_s": retry_after},
            headers=[(b"retry-after", str(retry_after).encode())],
        )
        return True

    def take(self, key: bytes) -> float:
        """Spend one token of ``key``'s bucket: 0 when allowed, else seconds until one is back."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._forget_idle(now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled (forgetting them changes nothing); if every
        client is busy, start over rather than grow without bound."""
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[key]
        if len(self._buckets) > MAX_CLIENTS:
            self._buckets.clear()


def _client_key(scope: Scope) -> bytes:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            return b"t:" + hashlib.sha256(value).digest()
    client = scope.get("client")
    return b"a:" + (str(client[0]).encode() if client else b"unknown")


async def _reject(
    send: Send,
    status: int,
    message: str,
    *,
    code: str = "VALIDATION_ERROR",
    details: dict[str, Any] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload: dict[str, Any] = {"error_code": code, "error_message": message, "details": details or {}}
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
