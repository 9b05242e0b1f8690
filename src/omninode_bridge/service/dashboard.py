"""The operator dashboard: one HTML page and a server-sent-event stream of snapshots.

One :class:`Broadcaster` per app builds a snapshot (counts, held locks with holders
and waiters, recent events, this instance's acquire rate) when something changed in
this instance, or every second otherwise (other instances' changes), and only while
someone watches. Lease ids are never part of a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.errors import LockDatabaseError, LockNotFoundError
from omninode_bridge.service.routes import info_json

if TYPE_CHECKING:
    from fastapi import FastAPI

router = APIRouter()
PERIOD = 1.0
DETAIL_LIMIT = 50


async def snapshot_locks(locks: LockClient, limit: int = 200) -> dict[str, Any]:
    """Held locks with their holders (mode, token, time left) and waiters."""
    now = datetime.now(UTC)  # display only: time left shown to a person, never decided here
    summaries = await locks.list_locks(limit=limit)
    out = []
    for i, s in enumerate(summaries):
        if i >= DETAIL_LIMIT:
            out.append({"name": s.name, "holders": [], "waiters": [], "held": True, "truncated": True})
            continue
        try:
            info = await locks.get_lock_info(s.name)
        except LockNotFoundError:  # released and pruned since the listing
            continue
        detail = info_json(info)
        for h, lease in zip(detail["holders"], info.holders, strict=True):
            h["ttl_left_s"] = round((lease.expires_at - now).total_seconds(), 2)
        out.append(detail)
    return {"locks": out, "count": len(summaries)}


def _event_json(e: dict[str, Any]) -> dict[str, Any]:
    created = e.get("created_at")
    return {
        "id": e.get("id"),
        "time": created.isoformat() if isinstance(created, datetime) else str(created),
        "type": e.get("event_type"),
        "lock": e.get("lock_name"),
        "owner": e.get("owner_id"),
        "token": e.get("token"),
    }


class Broadcaster:
    """Builds snapshots while anyone subscribes; each subscriber keeps only the newest."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def snapshot(self) -> dict[str, Any]:
        state = self._app.state
        locks: LockClient | None = state.locks
        if locks is None:
            raise LockDatabaseError("the service has not reached PostgreSQL yet")
        counts = await locks.counts()
        held = await snapshot_locks(locks)
        events = [_event_json(e) for e in await locks.recent_events(None, 40)]
        return {
            "time": datetime.now(UTC).isoformat(),
            "counts": counts,
            "locks": held["locks"],
            "events": events,
            "acquires": state.metrics.acquire_rate(),
            "relay": await state.events.relay_health(),  # backlog and lag; None: no relay here
            "instance": {
                "pool_size": locks.pool.get_size(),
                "pool_idle": locks.idle_connections(),
                "pool_max": locks.pool.get_max_size(),
                "local_waiters": locks.stats.waiting,
            },
        }

    async def _run(self) -> None:
        changed: asyncio.Event = self._app.state.changed
        while self._subscribers:
            changed.clear()
            try:
                data = json.dumps(await self.snapshot(), default=str)
            except Exception as err:
                data = json.dumps({"error": getattr(err, "code", None) or type(err).__name__})
            for queue in list(self._subscribers):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(data)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), PERIOD)
            await asyncio.sleep(0.1)  # coalesce bursts of changes
        self._task = None

    async def subscribe(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            while True:
                yield f"event: snapshot\ndata: {await queue.get()}\n\n"
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/dashboard", response_class=HTMLResponse, summary="Live operator dashboard")
async def page() -> HTMLResponse:
    html = resources.files("omninode_bridge.service").joinpath("dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(html)


@router.get("/dashboard/stream", summary="Dashboard snapshots as server-sent events")
async def stream(request: Request) -> StreamingResponse:
    request.app.state.auth.require(request)
    broadcaster: Broadcaster = request.app.state.dashboard
    return StreamingResponse(
        broadcaster.subscribe(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
