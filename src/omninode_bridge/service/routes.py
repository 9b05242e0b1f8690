"""``/v1/locks`` (SPEC §4): acquire (long poll), release, extend, info, list, force-release.

Every route calls the engine (:class:`LockClient`) once; nothing here decides who
holds a lock. Lease ids appear only in the acquire/extend answer of their own holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import Receive

from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.errors import LockDatabaseError, LockError, LockValidationError
from omninode_bridge.locks.models import Lease, LockInfo, LockSummary
from omninode_bridge.service.auth import Role, TokenAuth
from omninode_bridge.service.metrics import ServiceMetrics
from omninode_bridge.service.schemas import AcquireBody, ErrorOut, ExtendBody, LeaseOut, ReleaseBody

router = APIRouter(prefix="/v1")

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 410, 413, 422, 429, 503)
}


def _parts(request: Request) -> tuple[LockClient, ServiceMetrics, TokenAuth]:
    state = request.app.state
    locks: LockClient | None = state.locks
    if locks is None:
        raise LockDatabaseError("the service has not reached PostgreSQL yet", reason="connecting")
    return locks, state.metrics, state.auth


def lease_json(lease: Lease) -> dict[str, Any]:
    return lease.to_dict()


def holder_json(lease: Lease) -> dict[str, Any]:
    """A holder as third parties see it: everything but the lease id."""
    out = lease.to_dict()
    del out["lease_id"]
    out["hold_count"] = lease.hold_count
    return out


def info_json(info: LockInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "held": info.held,
        "permits": info.permits,
        "last_token": info.last_token,
        "holders": [holder_json(h) for h in info.holders],
        "waiters": [
            {"owner_id": w.owner_id, "mode": w.mode.value, "position": w.position, "waiting_ms": w.waiting_ms}
            for w in info.waiters
        ],
    }


def summary_json(s: LockSummary) -> dict[str, Any]:
    return {
        "name": s.name,
        "mode": "exclusive" if s.exclusive else "shared",
        "holders": s.holders,
        "owners": s.owners,
        "permits": s.permits,
        "waiters": s.waiters,
        "last_token": s.last_token,
        "next_expiry": _iso(s.next_expiry),
    }


def _text(value: str | None, field: str) -> str | None:
    """A query-string filter: PostgreSQL text cannot hold U+0000, so refuse it here."""
    if value is not None and "\x00" in value:
        raise LockValidationError(f"{field} must not contain NUL", field=field)
    return value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def _until_disconnect(receive: Receive) -> None:
    """Returns when the HTTP client goes away (the body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _acquire_or_abandon(receive: Receive, locks: LockClient, name: str, body: AcquireBody) -> Lease:
    """A long poll: the engine waits on the process's shared listener; if the caller
    hangs up first the wait is cancelled, and the engine leaves the queue (releasing a
    grant that raced in), so nobody holds a lease that no one knows about."""
    acquiring_now = locks.acquire(
        name,
        body.owner_id,
        mode=body.mode,
        ttl=body.ttl,
        wait=body.wait,
        permits=body.permits,
        reentrant=body.reentrant,
        metadata=body.metadata,
        lease_id=body.lease_id,
        correlation_id=body.correlation_id,
    )
    if body.wait <= 0:  # a try-lock answers at once: no need to watch the connection
        return await acquiring_now
    acquiring = asyncio.ensure_future(acquiring_now)
    watching = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait((acquiring, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if not acquiring.done():
        acquiring.cancel()
        with contextlib.suppress(BaseException):
            await acquiring
        raise LockValidationError("the client disconnected while waiting", lock_name=name)
    return acquiring.result()


def state_parts(state: Any, authorization: str | None) -> tuple[LockClient, ServiceMetrics]:
    """The client and metrics of an app's ``state``, once the caller's token is accepted
    for a client operation (``DATABASE_ERROR`` first while PostgreSQL is not reached)."""
    locks: LockClient | None = state.locks
    if locks is None:
        raise LockDatabaseError("the service has not reached PostgreSQL yet", reason="connecting")
    state.auth.role_of(authorization)
    return locks, state.metrics


async def acquire_lease(state: Any, name: str, body: AcquireBody, receive: Receive) -> dict[str, Any]:
    """``POST /v1/locks/{name}/acquire`` after parsing and auth: the lease as JSON data.
    Shared by the FastAPI route and the hot path (:mod:`.fastpath`)."""
    locks, metrics = state.locks, state.metrics
    started = time.perf_counter()
    try:
        lease = await _acquire_or_abandon(receive, locks, name, body)
    except LockError as err:
        metrics.acquires.labels(err.code.lower()).inc()
        if err.code == "DEADLOCK_DETECTED":
            metrics.deadlocks.inc()
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.acquire_seconds.observe(elapsed)
    if body.lease_id is not None and (lease.lock_name != name or lease.owner_id != body.owner_id):
        # the caller's id names a live lease of another lock or owner: refuse, never show it
        metrics.acquires.labels("validation_error").inc()
        raise LockValidationError("lease_id is already used by another lease", field="lease_id")
    metrics.granted(elapsed)
    state.changed.set()
    return lease_json(lease)


async def release_lease(state: Any, name: str, body: ReleaseBody) -> dict[str, Any]:
    """``POST /v1/locks/{name}/release`` after parsing and auth (route and hot path)."""
    locks, metrics = state.locks, state.metrics
    started = time.perf_counter()
    try:
        released_now = await locks.release(body.lease_id, correlation_id=body.correlation_id, name=name)
    finally:
        metrics.release_seconds.observe(time.perf_counter() - started)
    metrics.releases.inc()
    state.changed.set()
    return {"lock_name": name, "released": True, "already_released": not released_now}


@router.post(
    "/locks/{name}/acquire",
    response_model=LeaseOut,
    responses=_ERRORS,
    summary="Acquire a lock (try-lock, or long-poll up to `wait` seconds)",
)
async def acquire(name: str, body: AcquireBody, request: Request) -> JSONResponse:
    state_parts(request.app.state, request.headers.get("authorization"))
    return JSONResponse(await acquire_lease(request.app.state, name, body, request.receive))


@router.post("/locks/{name}/release", responses=_ERRORS, summary="Release a lease (idempotent)")
async def release(name: str, body: ReleaseBody, request: Request) -> dict[str, Any]:
    state_parts(request.app.state, request.headers.get("authorization"))
    return await release_lease(request.app.state, name, body)


@router.post("/locks/{name}/extend", response_model=LeaseOut, responses=_ERRORS, summary="Renew a lease")
async def extend(name: str, body: ExtendBody, request: Request) -> JSONResponse:
    locks, metrics, auth = _parts(request)
    auth.require(request)
    lease = await locks.extend_lease_id(
        body.lease_id, body.ttl, correlation_id=body.correlation_id, name=name
    )
    metrics.extends.inc()
    request.app.state.changed.set()
    return JSONResponse(lease_json(lease))


@router.get("/locks/{name}", responses=_ERRORS, summary="Holders, waiters and last token of one lock")
async def info(name: str, request: Request) -> dict[str, Any]:
    locks, _, auth = _parts(request)
    auth.require(request)
    return info_json(await locks.get_lock_info(name))


@router.get("/locks", responses=_ERRORS, summary="Held locks, by name (keyset paging with `after`)")
async def list_locks(
    request: Request,
    prefix: str | None = Query(default=None, max_length=255),
    owner_id: str | None = Query(default=None, max_length=255),
    expiring_within: float | None = Query(default=None, ge=0, le=86400),
    limit: int = Query(default=100, ge=1, le=1000),
    after: str | None = Query(default=None, max_length=255),
) -> dict[str, Any]:
    locks, _, auth = _parts(request)
    auth.require(request)
    rows = await locks.list_locks(
        prefix=_text(prefix, "prefix"),
        owner_id=_text(owner_id, "owner_id"),
        expiring_within=expiring_within,
        limit=limit,
        after=_text(after, "after"),
    )
    items = [summary_json(r) for r in rows]
    return {"locks": items, "next_after": items[-1]["name"] if len(items) == limit else None}


@router.delete("/locks/{name}", responses=_ERRORS, summary="Admin: free every lease of a lock")
async def force_release(
    name: str,
    request: Request,
    reason: str = Query(default="force-released over HTTP", min_length=1, max_length=1000),
    correlation_id: str | None = Query(default=None, min_length=1, max_length=255),
) -> dict[str, Any]:
    locks, metrics, auth = _parts(request)
    auth.require(request, Role.ADMIN)
    count = await locks.force_release(
        name, _text(reason, "reason") or "", correlation_id=_text(correlation_id, "correlation_id")
    )
    metrics.force_releases.inc(count)
    request.app.state.changed.set()
    return {"lock_name": name, "released": count}


@router.post("/cleanup", responses=_ERRORS, summary="Admin: reap expired leases now")
async def cleanup(request: Request) -> dict[str, Any]:
    locks, metrics, auth = _parts(request)
    auth.require(request, Role.ADMIN)
    count = await locks.cleanup_expired()
    metrics.expired.inc(count)
    request.app.state.changed.set()
    return {"cleaned_count": count}
