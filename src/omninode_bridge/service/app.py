"""The ASGI application: ``create_app(settings)`` (SPEC §4).

One :class:`LockClient` per worker process, opened in the lifespan: its pool, its
shared LISTEN connection (every long-poll waiter of the process sleeps on it) and a
cleanup loop that counts the leases it reaps for ``distributed_lock_expired_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from omninode_bridge import __version__
from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockDatabaseError, LockError
from omninode_bridge.service import dashboard, events_routes, routes
from omninode_bridge.service.auth import TokenAuth
from omninode_bridge.service.errors import install_error_handlers
from omninode_bridge.service.fastpath import LockServiceApp
from omninode_bridge.service.limits import BodyLimit
from omninode_bridge.service.metrics import ServiceMetrics
from omninode_bridge.service.relay_runner import EventsRuntime

HEALTH_TIMEOUT = 3.0


CONNECT_RETRY = 1.0


def locks_of(app: Any) -> LockClient:
    """The app's client; ``DATABASE_ERROR`` while the first connection is still pending."""
    locks: LockClient | None = app.state.locks
    if locks is None:
        raise LockDatabaseError(
            "the service has not reached PostgreSQL yet", reason=app.state.connect_error or "connecting"
        )
    return locks


async def _connect(app: FastAPI, cfg: LockSettings) -> None:
    """Open the client; while PostgreSQL is unreachable keep trying (the service stays up
    and answers 503, so an orchestrator can start it before its database)."""
    while True:
        try:
            app.state.locks = await LockClient.connect(settings=cfg, cleanup=False)
        except LockDatabaseError as err:
            if app.state.connect_error != err.message:
                emit_log_event(
                    LogLevel.WARNING, "lock client not ready; retrying every second", {"error": err.message}
                )
            app.state.connect_error = err.message
            await asyncio.sleep(CONNECT_RETRY)
            continue
        except LockError as err:  # a configuration problem: retrying cannot help
            app.state.connect_error = err.code
            emit_log_event(
                LogLevel.ERROR, "cannot open the lock client", {"error": f"{err.code}: {err.message}"}
            )
            raise
        app.state.connect_error = None
        emit_log_event(LogLevel.INFO, "lock service ready", {"database": cfg.safe_dsn()})
        return


async def _cleanup_loop(app: FastAPI, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        if app.state.locks is None:
            continue
        try:
            reaped = await app.state.locks.cleanup_expired()
        except Exception as err:  # the next round tries again; correctness never needs it
            emit_log_event(LogLevel.WARNING, "lock cleanup failed", {"error": type(err).__name__})
            continue
        if reaped:
            app.state.metrics.expired.inc(reaped)
            app.state.changed.set()


def create_app(settings: LockSettings | None = None) -> FastAPI:
    """The lock service; the database comes from ``settings`` (else the environment,
    else an embedded PostgreSQL)."""
    cfg = settings or LockSettings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connecting = asyncio.get_running_loop().create_task(_connect(app, cfg))
        # a first attempt before serving: a bad DSN fails the start-up at once
        await asyncio.wait({connecting}, timeout=HEALTH_TIMEOUT)
        if connecting.done() and connecting.exception() is not None:
            raise connecting.exception()  # type: ignore[misc]
        cleaner = asyncio.get_running_loop().create_task(_cleanup_loop(app, cfg.cleanup_interval))
        app.state.events.start()  # the outbox relay, when Kafka is configured (issue 8)
        try:
            yield
        finally:
            await app.state.events.close()  # before the client's pool closes
            for task in (cleaner, connecting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.dashboard.close()
            if app.state.locks is not None:
                await app.state.locks.close()

    app = LockServiceApp(  # FastAPI, with acquire/release served on a shorter path
        title="omninode-bridge lock service",
        version=__version__,
        description="Distributed locks on PostgreSQL (exclusive, shared, semaphores) with fencing tokens.",
        lifespan=lifespan,
    )
    app.state.settings = cfg
    app.state.locks = None
    app.state.connect_error = None
    app.state.metrics = ServiceMetrics()
    app.state.auth = TokenAuth(cfg.token_values("client"), cfg.token_values("admin"))
    app.state.changed = asyncio.Event()
    app.state.dashboard = dashboard.Broadcaster(app)
    app.state.events = EventsRuntime(app, cfg)
    app.state.events.gauges.register(app.state.metrics.registry)
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.include_router(routes.router)
    app.include_router(events_routes.router)  # GET /v1/events (long poll, SSE): issue 8
    app.include_router(dashboard.router)

    @app.get("/health", summary="Liveness and database reachability")
    async def health(request: Request) -> JSONResponse:
        try:
            counts = await asyncio.wait_for(locks_of(request.app).counts(), HEALTH_TIMEOUT)
        except (Exception, TimeoutError) as err:
            reason = getattr(err, "code", None) or type(err).__name__
            if isinstance(err, LockError) and err.details.get("reason"):
                reason = f"{reason}: {err.details['reason']}"
            body: dict[str, Any] = {"status": "unhealthy", "postgres": "unreachable", "reason": reason}
            return JSONResponse(body, status_code=503)
        healthy: dict[str, Any] = {"status": "healthy", "postgres": "connected"}
        healthy["locks"] = counts["active_locks"]
        relay = await request.app.state.events.relay_health()  # None: no Kafka, no relay here
        if relay is not None:  # a broker outage degrades the service but locks still work: 200
            healthy.update(relay=relay, status="degraded" if relay["state"] != "ok" else "healthy")
        return JSONResponse(healthy)

    @app.get("/metrics", summary="Prometheus text format")
    async def metrics(request: Request) -> Response:
        await request.app.state.events.refresh_gauges()  # outbox backlog, relay lag
        text = await request.app.state.metrics.render(request.app.state.locks)  # None: still connecting
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/locks", summary="Held locks for operators (no lease ids)")
    async def operator_locks(request: Request) -> dict[str, Any]:
        request.app.state.auth.require(request)
        return await dashboard.snapshot_locks(locks_of(request.app))

    return app
