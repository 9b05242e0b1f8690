"""The hot path of acquire/release (service/fastpath.py) answers exactly as the FastAPI
routes do, is really taken for ordinary requests, and hands every unusual one to
FastAPI; the server's one-send-per-response transport and its event loop choice."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.service.app import create_app
from omninode_bridge.service.protocol import CoalescingTransport, coalescing_protocol
from omninode_bridge.service.server import event_loop_factory

VOLATILE = {"lease_id", "token", "acquired_at", "expires_at"}


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data  # an iterator body goes out chunked: no Content-Length, so FastAPI serves it


def stable(body: Any) -> Any:
    """``body`` without what differs between two calls (ids, tokens, times, time left)."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k not in VOLATILE}
    if "error_message" in out:
        out["error_message"] = re.sub(r"[0-9.]+s\b", "Ns", out["error_message"])
        out["details"] = {k: v for k, v in out["details"].items() if k != "retry_after_ms"}
    return out


async def both_ways(http: httpx.AsyncClient, path: str, data: bytes) -> list[tuple[int, Any, str | None]]:
    """The same request with a Content-Length (hot path) and chunked (FastAPI)."""
    out = []
    for content in (data, chunks(data)):
        res = await http.post(path, content=content, headers={"content-type": "application/json"})
        out.append((res.status_code, stable(res.json()), res.headers.get("retry-after")))
    return out


async def test_hot_path_and_fastapi_answer_alike(http: httpx.AsyncClient) -> None:
    name = f"/v1/locks/hot-{uuid.uuid4().hex[:8]}"
    held = await http.post(f"{name}/acquire", json={"owner_id": "holder", "ttl": 30})
    assert held.status_code == 200
    cases = {
        "busy": (f"{name}/acquire", b'{"owner_id": "other"}', 409),
        "bad type": (f"{name}/acquire", b'{"owner_id": "o", "ttl": "30"}', 422),
        "unknown field": (f"{name}/acquire", b'{"owner_id": "o", "colour": 1}', 422),
        "malformed": (f"{name}/acquire", b'{"owner_id": ', 422),
        "not an object": (f"{name}/release", b"[1, 2]", 422),
        "long name": ("/v1/locks/" + "n" * 300 + "/acquire", b'{"owner_id": "o"}', 422),
        "stolen lease id": (
            f"{name}-2/acquire",
            b'{"owner_id": "thief", "lease_id": "' + held.json()["lease_id"].encode() + b'"}',
            422,
        ),
        "unknown lease": (f"{name}/release", b'{"lease_id": "00000000-0000-4000-8000-000000000000"}', 409),
    }
    for case, (path, data, status) in cases.items():
        hot, routed = await both_ways(http, path, data)
        assert hot == routed, case
        assert hot[0] == status, (case, hot)
    busy, _ = await both_ways(http, f"{name}/acquire", b'{"owner_id": "other"}')
    assert busy[1]["error_code"] == "LOCK_HELD_BY_OTHER" and busy[2] is not None  # Retry-After
    released = await http.post(f"{name}/release", json={"lease_id": held.json()["lease_id"]})
    assert released.json() == {
        "lock_name": name.rsplit("/", 1)[1],
        "released": True,
        "already_released": False,
    }


@pytest.fixture
async def app_and_calls(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, list[str]]]:
    """The app in this process on a real database, counting what FastAPI itself serves."""
    settings = LockSettings(dsn=dsn, cleanup_interval=3600, client_tokens=("c-token",), admin_tokens=())
    app = create_app(settings)
    calls: list[str] = []
    routed = FastAPI.__call__

    async def counting(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await routed(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        app.state.locks = locks
        yield app, calls


async def test_ordinary_requests_skip_fastapi_and_unusual_ones_reach_it(
    app_and_calls: tuple[FastAPI, list[str]],
) -> None:
    app, calls = app_and_calls
    auth = {"authorization": "Bearer c-token"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=auth) as http:
        got = await http.post("/v1/locks/hp/acquire", json={"owner_id": "a", "ttl": 30})
        assert got.status_code == 200 and got.json()["owner_id"] == "a"
        gone = await http.post("/v1/locks/hp/release", json={"lease_id": got.json()["lease_id"]})
        assert gone.status_code == 200 and gone.json()["already_released"] is False
        no_token = await http.post(
            "/v1/locks/hp/acquire", json={"owner_id": "a"}, headers={"authorization": ""}
        )
        assert no_token.status_code == 401 and no_token.json()["error_code"] == "UNAUTHORIZED"
        assert calls == []  # all three answered without FastAPI
        bad = await http.post("/v1/locks/hp/acquire", json={"owner_id": "a", "wait": -1})
        assert bad.status_code == 422 and bad.json()["error_message"].startswith("wait:")
        assert calls == ["/v1/locks/hp/acquire"]
        assert (await http.get("/v1/locks/hp")).json()["held"] is False
        app.state.locks = None  # not connected yet: 503 on the hot path too
        down = await http.post("/v1/locks/hp/acquire", json={"owner_id": "a"})
        assert down.status_code == 503 and down.json()["error_code"] == "DATABASE_ERROR"


class Recorder:
    """A transport that records what it is asked to send (no I/O)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_loop_step_leave_as_one_send() -> None:
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert raw.sent == []
    await asyncio.sleep(0)
    assert raw.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"data: 1\n\n")  # a later stream chunk: its own send, in its own step
    await asyncio.sleep(0)
    transport.write(b"bye")
    transport.close()  # pending bytes go out before the close
    assert raw.sent[1:] == [b"data: 1\n\n", b"bye"] and raw.closed
    assert transport.get_extra_info("peername") == "info:peername"
    await asyncio.sleep(0)
    assert len(raw.sent) == 3  # the scheduled flush after close sends nothing twice


def test_server_uses_uvloop_and_the_coalescing_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    assert event_loop_factory() is uvloop.new_event_loop
    assert coalescing_protocol() is not None
    monkeypatch.setenv("OMNINODE_EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None
