"""The two hot routes, acquire and release, without FastAPI's per-request machinery.

A try-lock acquire+release pair costs the engine about 0.3-0.5 ms of CPU; FastAPI's
stack (error and telemetry middleware, routing, dependency solving, body re-reading,
response encoding) added about as much again per request. :class:`LockServiceApp`
answers ``POST /v1/locks/{name}/acquire`` and ``.../release`` itself when the request
is an ordinary one, with the same checks in the same order and the same code behind
them (the body models of :mod:`.schemas`, :func:`.routes.state_parts` for the database
and the token, :func:`.routes.acquire_lease` / :func:`.routes.release_lease`, the
error bodies of :mod:`.errors`). Anything unusual — no or a too large Content-Length,
a URL or body that is not UTF-8, JSON that does not parse or does not validate — is
handed, body replayed, to the full application, so every error answer (413, 400, 422
with the problem named) comes from one place. Nothing reaches the engine before the
body is valid and the token accepted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from omninode_bridge.service.errors import exception_response
from omninode_bridge.service.limits import MAX_BODY, url_problem
from omninode_bridge.service.routes import acquire_lease, release_lease, state_parts
from omninode_bridge.service.schemas import AcquireBody, ReleaseBody

HOT = re.compile(r"/v1/locks/([^/]+)/(acquire|release)")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class LockServiceApp(FastAPI):
    """FastAPI with the hot path in front (everything else, and every unusual request,
    goes through FastAPI unchanged)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hot = HOT.fullmatch(scope["path"])
            if hot is not None and url_problem(scope) is None:
                body = await _small_body(scope, receive)
                if body is None:  # no usable Content-Length: the full app decides
                    await super().__call__(scope, receive, send)
                    return
                if body is _GONE or await _answer(self, scope, hot[1], hot[2], body, receive, send):
                    return
                receive = _replay(body, receive)
        await super().__call__(scope, receive, send)


_GONE = b"\0gone"  # the client hung up while sending its body


async def _small_body(scope: Scope, receive: Receive) -> bytes | None:
    """The body when it declares a Content-Length within the limit (else None, nothing read)."""
    declared = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = value
        elif key == b"transfer-encoding":
            return None
    if declared is None or not declared.isdigit() or int(declared) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _parse(body: bytes, model: type[BaseModel]) -> Any:
    """The validated body, or None when it is anything but valid JSON for ``model``."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _authorization(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def _answer(
    app: FastAPI, scope: Scope, name: str, op: str, body: bytes, receive: Receive, send: Send
) -> bool:
    """Serve one hot request; False (nothing sent, nothing changed) hands it to FastAPI."""
    parsed = _parse(body, AcquireBody if op == "acquire" else ReleaseBody)
    if parsed is None:
        return False
    state = app.state
    try:
        state_parts(state, _authorization(scope))
        if op == "acquire":
            payload = await acquire_lease(state, name, parsed, receive)
        else:
            payload = await release_lease(state, name, parsed)
    except Exception as err:  # the app's own handlers' answers (LockError -> its status)
        await exception_response(err, scope["path"])(scope, receive, send)
        return True
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
    return True
