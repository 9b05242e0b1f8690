"""``/v1/events`` (SPEC §5): follow the lock history over HTTP with no broker.

``GET /v1/events?after=ID&wait=S&limit=N&lock=NAME`` is a long poll: the events after
outbox id ``ID`` in id order, waiting up to ``S`` s (woken by the committing
transaction's NOTIFY) when there are none yet; ``next_after`` is the cursor of the next
call. ``GET /v1/events/stream`` (or ``/v1/events`` with ``Accept: text/event-stream``)
is the same as server-sent events (``data:`` the event, ``id:`` its outbox id), so a reconnecting
``EventSource`` resumes after the last event it saw (``Last-Event-ID``). Without a
cursor both start at the oldest event kept. Resuming never skips an event (see
:mod:`omninode_bridge.events.feed`); an event is an
:class:`~omninode_bridge.events.Envelope`, never with a lease id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.events import EventFeed
from omninode_bridge.locks.errors import LockError, LockValidationError
from omninode_bridge.service.schemas import ErrorOut

router = APIRouter(prefix="/v1", tags=["events"])

_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (400, 401, 403, 422, 429, 503)}
MAX_WAIT = 60.0
SSE_MEDIA = "text/event-stream"
RETRY_MS = 1000  # how soon an EventSource reconnects after the stream ends
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {SSE_MEDIA: {"schema": {"type": "string"}}}, "description": "Server-sent events"}
}


class EventOut(BaseModel):
    """One lock event (the Kafka message value, plus its outbox ``id``)."""

    id: int
    event_id: str
    event_type: str
    lock_name: str
    owner_id: str | None
    token: int | None
    occurred_at: str
    correlation_id: str | None
    payload: dict[str, Any]


class EventsPage(BaseModel):
    events: list[EventOut]
    next_after: int


def _lock_filter(lock: str | None) -> str | None:
    if lock is not None and "\x00" in lock:
        raise LockValidationError("lock must not contain NUL", field="lock")
    return lock


def _resume_point(after: int, last_event_id: int | None) -> int:
    """``Last-Event-ID`` (sent by a reconnecting EventSource) wins over ``after``."""
    return after if last_event_id is None else last_event_id


_LAST_EVENT_ID = Header(
    default=None,
    ge=0,
    alias="Last-Event-ID",
    description="SSE: resume after this outbox id (wins over `after`).",
)


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _follow_or_abandon(request: Request, feed: EventFeed, after: int, wait: float, limit: int,
                             lock: str | None) -> list[Any]:  # fmt: skip
    """The long poll, cancelled if the caller hangs up first (nothing to undo: a read)."""
    if wait <= 0:
        return await feed.follow(after, 0.0, limit, lock)
    following = asyncio.ensure_future(feed.follow(after, wait, limit, lock))
    watching = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait((following, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not following.done():  # the caller left (or this request is being cancelled)
            following.cancel()
    if not following.done():
        with contextlib.suppress(asyncio.CancelledError):
            await following
        return []  # nobody is there to read an answer
    return following.result()


def _sse(feed: EventFeed, after: int, limit: int, lock: str | None, heartbeat: float) -> StreamingResponse:
    """Unnamed events (one ``onmessage`` handler sees them all; ``event_type`` is in the
    data), ``id:`` = outbox id. If the database fails mid-stream the stream ends with a
    comment saying so, and the client reconnects (``retry:``) after its last id."""

    async def lines() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        try:
            async for envelope in feed.stream(after, limit, lock, heartbeat=heartbeat):
                if envelope is None:
                    yield ": keep-alive\n\n"
                else:
                    data = json.dumps(envelope, sort_keys=True, separators=(",", ":"), default=str)
                    yield f"id: {envelope['id']}\ndata: {data}\n\n"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LockError) as err:
            emit_log_event(LogLevel.WARNING, "event stream ended", {"error": type(err).__name__})
            yield f": database unavailable ({type(err).__name__}); reconnect after the last id\n\n"

    return StreamingResponse(
        lines(), media_type=SSE_MEDIA, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


async def _feed(request: Request) -> EventFeed:
    request.app.state.auth.require(request)
    feed: EventFeed = await request.app.state.events.feed()
    return feed


@router.get(
    "/events",
    response_model=EventsPage,
    responses={**_ERRORS, **_SSE_DOC},
    summary="Lock events after an outbox id (long poll up to `wait` s; SSE with Accept: text/event-stream)",
)
async def list_events(
    request: Request,
    after: int = Query(default=0, ge=0, description="Outbox id: events after it (the last `next_after`)."),
    wait: float = Query(
        default=0.0, ge=0, le=MAX_WAIT, description="Seconds to wait when there are none yet."
    ),
    limit: int = Query(default=100, ge=1, le=1000),
    lock: str | None = Query(
        default=None, min_length=1, max_length=255, description="Only this lock's events."
    ),
    heartbeat: float = Query(default=15.0, ge=0.5, le=MAX_WAIT, description="SSE only: keep-alive period."),
    last_event_id: int | None = _LAST_EVENT_ID,
) -> Any:
    feed = await _feed(request)
    lock = _lock_filter(lock)
    if SSE_MEDIA in request.headers.get("accept", ""):
        return _sse(feed, _resume_point(after, last_event_id), limit, lock, heartbeat)
    events = await _follow_or_abandon(request, feed, after, wait, limit, lock)
    return {"events": events, "next_after": events[-1]["id"] if events else after}


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={**_ERRORS, **_SSE_DOC},
    summary="Lock events as server-sent events (resumes after Last-Event-ID or `after`)",
)
async def stream_events(
    request: Request,
    after: int = Query(default=0, ge=0, description="Outbox id to start after (Last-Event-ID wins)."),
    limit: int = Query(default=100, ge=1, le=1000, description="Events per read."),
    lock: str | None = Query(
        default=None, min_length=1, max_length=255, description="Only this lock's events."
    ),
    heartbeat: float = Query(default=15.0, ge=0.5, le=MAX_WAIT, description="Keep-alive comment period (s)."),
    last_event_id: int | None = _LAST_EVENT_ID,
) -> StreamingResponse:
    feed = await _feed(request)
    return _sse(feed, _resume_point(after, last_event_id), limit, _lock_filter(lock), heartbeat)
