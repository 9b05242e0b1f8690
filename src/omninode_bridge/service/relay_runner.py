"""The service's side of the outbox (issue 8): one event feed per process for
``/v1/events``, and, when Kafka is configured, a relay running in the service.

:class:`EventsRuntime` lives on ``app.state.events`` and is started and closed by the
lifespan. Both the feed and the relay use the lock client's pool and DSN, so they only
start once the service has reached PostgreSQL (the service may start before its
database); until then the feed answers ``DATABASE_ERROR`` and the relay is ``starting``.

Health and gauges: a relay that cannot reach its broker is ``degraded``; locks keep
working, so ``/health`` stays 200 and says ``"status": "degraded"``. The backlog and
lag gauges are exported only where they mean something: while this service runs a
relay or some relay (``omninode-lock relay``) has registered in ``outbox_relays``.
Without any relay every event stays unrelayed by design, and a growing "backlog"
would only alarm people; the two gauges are then absent from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import asyncpg
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.events import EventFeed, Relay, close_feed, feed_for, open_relay, outbox_stats
from omninode_bridge.events.queries import load_event_queries
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockDatabaseError, LockValidationError

if TYPE_CHECKING:
    from fastapi import FastAPI

STATUS_TIMEOUT = 3.0  # /health and /metrics never wait longer for the outbox figures
STOP_TIMEOUT = 3.0  # on shutdown, let a round in flight finish this long, then cancel it
RESTART_DELAY = 1.0
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class RelayRunner:
    """A :class:`~omninode_bridge.events.Relay` as a lifespan task: waits for the lock
    client, relays until :meth:`close`, and restarts itself if it ever fails."""

    def __init__(self, app: FastAPI, settings: LockSettings) -> None:
        self._app = app
        self._settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.relay: Relay | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _client(self) -> LockClient:
        while True:
            locks: LockClient | None = self._app.state.locks
            if locks is not None:
                return locks
            await asyncio.sleep(0.1)

    async def _run(self) -> None:
        locks = await self._client()
        failed: str | None = None
        while not self._stop.is_set():
            try:
                async with open_relay(self._settings, pool=locks.pool, dsn=locks.dsn) as relay:
                    self.relay = relay
                    emit_log_event(LogLevel.INFO, "event relay running in the service",
                                   {"sink": relay.sink.describe(), "relay_id": relay.relay_id})  # fmt: skip
                    await relay.run(self._stop)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # e.g. the LISTEN connection cannot open: try again
                if failed != type(err).__name__:  # once per kind of failure, not every second
                    failed = type(err).__name__
                    emit_log_event(LogLevel.WARNING, "event relay failed; restarting", {"error": failed})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RESTART_DELAY)

    def state(self) -> str:
        return "starting" if self.relay is None else self.relay.status().state

    async def close(self) -> None:
        """Stop between rounds; else cancel the round in flight (it rolls back: its events
        are sent again later, same event_id); else give up on its clean-up too."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        for _ in range(2):
            done, _pending = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
            if done:
                break
            task.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            emit_log_event(LogLevel.WARNING, "event relay ended with an error",
                           {"error": type(task.exception()).__name__})  # fmt: skip


class EventsRuntime:
    """The feed and the optional relay of one service process (``app.state.events``)."""

    def __init__(self, app: FastAPI, settings: LockSettings) -> None:
        if settings.kafka_bootstrap_servers and importlib.util.find_spec("aiokafka") is None:
            raise LockValidationError(
                "OMNINODE_KAFKA_BOOTSTRAP_SERVERS is set but aiokafka is not installed: "
                "pip install 'omninode-bridge[kafka]'",
                field="kafka_bootstrap_servers",
            )
        self._app = app
        self._settings = settings
        self._feed: EventFeed | None = None
        self._opening = asyncio.Lock()
        self.runner = RelayRunner(app, settings) if settings.kafka_bootstrap_servers else None
        self.gauges = OutboxGauges()

    def start(self) -> None:
        if self.runner is not None:
            self.runner.start()

    async def feed(self) -> EventFeed:
        """The process's feed (opened on first use: it needs the client's pool and a
        LISTEN connection of its own)."""
        if self._feed is None:
            async with self._opening:
                if self._feed is None:
                    locks: LockClient | None = self._app.state.locks
                    if locks is None:
                        raise LockDatabaseError(
                            "the service has not reached PostgreSQL yet", reason="connecting"
                        )
                    try:
                        self._feed = await feed_for(locks.pool, locks.dsn, locks.schema)
                    except _DB_ERRORS as err:
                        raise LockDatabaseError(
                            f"cannot listen for events: {type(err).__name__}", reason=type(err).__name__
                        ) from err
        return self._feed

    async def relay_health(self) -> dict[str, Any] | None:
        """``{"state", "broker_reachable", "backlog", "lag_s", "relayed"}``, or None when
        no relay runs here (no Kafka configured)."""
        if self.runner is None:
            return None
        relay = self.runner.relay
        out: dict[str, Any] = {"state": self.runner.state(), "broker_reachable": None, "relayed": 0}
        out["backlog"] = out["lag_s"] = None
        if relay is not None:
            mine = relay.status()
            out.update(broker_reachable=mine.broker_reachable, relayed=mine.relayed_total)
        locks: LockClient | None = self._app.state.locks
        if locks is not None:
            with contextlib.suppress(TimeoutError, *_DB_ERRORS):
                stats = await asyncio.wait_for(outbox_stats(locks.pool, locks.schema), STATUS_TIMEOUT)
                out.update(backlog=stats.backlog, lag_s=round(stats.lag_seconds, 3))
        return out

    async def refresh_gauges(self) -> None:
        """Read the backlog and lag for ``/metrics`` (see the module doc for when)."""
        locks: LockClient | None = self._app.state.locks
        if locks is None:
            return
        try:
            await asyncio.wait_for(self._refresh(locks), STATUS_TIMEOUT)
        except (TimeoutError, *_DB_ERRORS):
            self.gauges.values = None  # unknown now: absent rather than stale

    async def _refresh(self, locks: LockClient) -> None:
        relaying = self.runner is not None or bool(
            await locks.pool.fetch(load_event_queries(locks.schema)["relays"])
        )
        if not relaying:
            self.gauges.values = None
            return
        stats = await outbox_stats(locks.pool, locks.schema)
        up = None if self.runner is None else float(self.runner.state() == "ok")
        self.gauges.values = (float(stats.backlog), stats.lag_seconds, up)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        feed, self._feed = self._feed, None
        if feed is not None:
            await close_feed(feed)


class OutboxGauges(Collector):
    """``distributed_lock_outbox_backlog``, ``distributed_lock_relay_lag_seconds`` and
    (with a relay in this process) ``distributed_lock_relay_up``, from the values of the
    last refresh; nothing at all while ``values`` is None."""

    def __init__(self) -> None:
        self.values: tuple[float, float, float | None] | None = None

    def register(self, registry: CollectorRegistry) -> OutboxGauges:
        registry.register(self)
        return self

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # values appear and disappear: do not pin the names at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.values is None:
            return
        backlog, lag, up = self.values
        yield GaugeMetricFamily(
            "distributed_lock_outbox_backlog", "Outbox events not yet relayed to Kafka", value=backlog
        )
        yield GaugeMetricFamily(
            "distributed_lock_relay_lag_seconds", "Age of the oldest event not yet relayed", value=lag
        )
        if up is not None:
            yield GaugeMetricFamily(
                "distributed_lock_relay_up", "1 when this service's relay reaches its broker", value=up
            )
