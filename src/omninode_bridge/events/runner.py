"""Wiring for processes: a relay (``omninode-lock relay``, or inside ``serve`` when Kafka
is configured) and a feed, each from :class:`~omninode_bridge.locks.config.LockSettings`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Literal

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.events.feed import EventFeed
from omninode_bridge.events.kafka import KafkaSink
from omninode_bridge.events.relay import LINGER, MAX_BACKOFF, Relay, Sink
from omninode_bridge.events.wakeup import OutboxWakeup
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockValidationError, SchemaVersionError
from omninode_bridge.locks.migrate import migrate
from omninode_bridge.locks.pool import open_pool
from omninode_bridge.locks.retry import is_transient


@contextlib.asynccontextmanager
async def _pool(settings: LockSettings, run_migrations: bool) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    pool, dsn = await open_pool(settings)
    try:
        if run_migrations:
            async with pool.acquire() as conn:
                await migrate(conn, settings.schema)  # type: ignore[arg-type]
        yield pool, dsn
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def open_feed(settings: LockSettings, *, run_migrations: bool = True) -> AsyncIterator[EventFeed]:
    """A feed with its own small pool and LISTEN connection."""
    async with _pool(settings, run_migrations) as (pool, dsn):
        wakeup = OutboxWakeup(dsn, settings.schema)
        await wakeup.start()
        try:
            yield EventFeed(pool, settings.schema, wakeup)
        finally:
            await wakeup.close()


async def feed_for(pool: asyncpg.Pool, dsn: str, schema: str) -> EventFeed:
    """A feed on an existing pool (e.g. the service's); close it with :func:`close_feed`."""
    wakeup = OutboxWakeup(dsn, schema)
    await wakeup.start()
    return EventFeed(pool, schema, wakeup)


async def close_feed(feed: EventFeed) -> None:
    if feed.wakeup is not None:
        await feed.wakeup.close()


def kafka_sink(settings: LockSettings, idempotence: Literal["auto", "on", "off"] = "auto") -> KafkaSink:
    """The sink ``settings`` configure; VALIDATION_ERROR when no Kafka is configured."""
    if not settings.kafka_bootstrap_servers:
        raise LockValidationError(
            "no Kafka configured: set OMNINODE_KAFKA_BOOTSTRAP_SERVERS (events stay followable "
            "from PostgreSQL: omninode-lock events --follow)",
            field="kafka_bootstrap_servers",
        )
    return KafkaSink(settings.kafka_bootstrap_servers, settings.kafka_topic_prefix, idempotence=idempotence)


@contextlib.asynccontextmanager
async def open_relay(
    settings: LockSettings,
    *,
    pool: asyncpg.Pool | None = None,
    dsn: str | None = None,
    sink: Sink | None = None,
    batch_size: int = 1000,
    linger: float = LINGER,
) -> AsyncIterator[Relay]:
    """A relay to ``sink`` (default: the configured Kafka); its own pool unless ``pool``
    and ``dsn`` are given. Run it with ``await relay.run(stop_event)``."""
    sink = sink or kafka_sink(settings)
    async with contextlib.AsyncExitStack() as stack:
        if pool is None or dsn is None:
            pool, dsn = await stack.enter_async_context(_pool(settings, True))
        assert pool is not None and dsn is not None
        wakeup = OutboxWakeup(dsn, settings.schema)
        await wakeup.start()
        stack.push_async_callback(wakeup.close)
        stack.push_async_callback(sink.stop)
        yield Relay(pool, settings.schema, sink, wakeup, batch_size=batch_size, linger=linger)


async def relay_until_stopped(
    settings: LockSettings,
    stop: asyncio.Event,
    make_sink: Callable[[], Sink],
    *,
    batch_size: int = 1000,
    linger: float = LINGER,
    started: Callable[[Relay], None] | None = None,
) -> int:
    """Run one relay until ``stop``; returns how many events it relayed. A database that
    cannot be reached while the relay starts (restarting, failing over, PgBouncer's
    ``server_login_retry``) is waited for with backoff, as a running relay rides out
    outages: a relay restarted by a supervisor during an outage must not exit again.
    Anything else (bad settings, wrong password, a schema newer than this code) ends it."""
    backoff = 0.0
    while not stop.is_set():
        running = False
        try:
            async with open_relay(settings, sink=make_sink(), batch_size=batch_size, linger=linger) as relay:
                running = True
                if started is not None:
                    started(relay)
                await relay.run(stop)
                return relay.relayed_total
        except Exception as err:
            if running or not _unreachable(err):
                raise
            if not backoff:
                # the engine's connect errors name the target with the password scrubbed
                emit_log_event(LogLevel.WARNING, "event relay cannot reach the database yet; retrying",
                               {"error": type(err).__name__, "detail": str(err)[:500]})  # fmt: skip
            backoff = min(MAX_BACKOFF, backoff * 2 if backoff else 0.1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
    return 0


def _unreachable(err: BaseException) -> bool:
    """A failure to reach the database (the engine's error or its cause), never a schema
    that is newer than this code."""
    if isinstance(err, SchemaVersionError):
        return False
    return is_transient(err) or (err.__cause__ is not None and is_transient(err.__cause__))
