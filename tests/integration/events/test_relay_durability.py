"""The relay publishes only what a database crash cannot undo, and survives a connection
left broken mid-round. Found by ``python -m chaos --pgbouncer``: (1) a release commits
lazily (it handed nothing on), the relay saw it, Kafka got it, an immediate restart lost
it - an event in Kafka the outbox never had; (2) a relay died on asyncpg's
``InternalClientError`` ("another operation is in progress") after a restart behind
PgBouncer, and the events after it never reached Kafka.

The sink here is an in-memory list (no I/O of its own to fake); the database is real."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from relay_helpers import wait_until

from omninode_bridge.events import Relay
from omninode_bridge.events.envelope import Row
from omninode_bridge.locks import LockClient, LockSettings

pytestmark = pytest.mark.integration
SCHEMA = "omninode_locks"


class ListSink:
    """Keeps what it is given; ``before`` runs first on every publish (and may raise)."""

    def __init__(self, before: Any = None) -> None:
        self.before = before
        self.messages: list[Row] = []
        self.calls = 0

    def describe(self) -> str:
        return "memory"

    async def publish(self, messages: Sequence[Row]) -> None:
        self.calls += 1
        if self.before is not None:
            await self.before(self.calls)
        self.messages.extend(messages)

    async def reset(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def test_a_round_makes_the_log_durable_past_its_events_before_publishing(
    dsn: str, settings: LockSettings
) -> None:
    """A lazily committed release is visible at once but on disk only later: when the sink
    is called, the write-ahead log must be flushed past that commit (the barrier)."""
    probe = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    seen: list[bool] = []
    lsn: list[str] = []

    async def check(_call: int) -> None:
        if lsn:  # only the round that carries the lazy release
            seen.append(
                bool(await probe.fetchval("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", lsn.pop()))
            )

    sink = ListSink(check)
    relay = Relay(pool, SCHEMA, sink)
    try:
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            for i in range(8):
                lease = await locks.acquire(f"durable:{i}", ttl=30, wait=0)
                await relay.relay_once()  # the grant: the next round carries only the release
                await locks.release(lease)  # handed nothing on: committed lazily
                lsn.append(str(await probe.fetchval("SELECT pg_current_wal_insert_lsn()::text")))
                before = len(sink.messages)
                assert await relay.relay_once() == (1, 1)
                assert sink.messages[before]["event_type"] == "lock_released"
                assert len(seen) == i + 1 and seen[-1], (
                    f"round {i}: the release was published before its commit was flushed"
                )
    finally:
        await pool.close()
        await probe.close()


async def test_a_connection_broken_mid_round_is_closed_and_the_relay_goes_on(
    dsn: str, settings: LockSettings
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    broken_pid: list[int] = []
    relay: Relay

    async def fail_once(call: int) -> None:
        if call == 1:
            assert relay._conn is not None
            broken_pid.append(relay._conn.get_server_pid())
            raise asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )

    sink = ListSink(fail_once)
    relay = Relay(pool, SCHEMA, sink, sweep=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            for i in range(5):
                lease = await locks.acquire(f"broken:{i}", ttl=30, wait=0)
                await locks.release(lease)

        async def all_relayed() -> bool:
            return len(sink.messages) >= 10

        await wait_until(all_relayed, 30)
        assert not task.done(), "the relay must ride the failure out, not exit"

        async def recovered() -> bool:  # a terminated backend leaves pg_stat_activity a moment later
            alive = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", broken_pid[0])
            return relay.status().state == "ok" and alive == 0

        await wait_until(recovered, 10)  # the broken connection was closed, not reused
        assert {m["event_type"] for m in sink.messages} == {"lock_acquired", "lock_released"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await pool.close()


async def test_a_relay_started_during_an_outage_waits_for_the_database(
    dsn: str, settings: LockSettings
) -> None:
    """A supervisor restarting the relay while PostgreSQL is down (or PgBouncer answers
    ``server_login_retry``) must not see it exit again: it waits with backoff, then relays.
    Found by the PgBouncer chaos run: a relay restarted mid-outage exited at once."""
    from tests.integration.proxy import CuttableProxy

    from omninode_bridge.events.runner import relay_until_stopped

    proxy = await CuttableProxy(dsn).start()
    proxy.cut()
    sink = ListSink()
    started: list[Relay] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        relay_until_stopped(
            settings.replace(dsn=proxy.dsn, connect_timeout=1.0), stop, lambda: sink, started=started.append
        )
    )
    try:
        await asyncio.sleep(1.5)
        assert not task.done(), "it waits for the database instead of exiting"
        assert started == []
        proxy.heal()
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            await locks.release(await locks.acquire("outage", ttl=30, wait=0))

        async def relayed() -> bool:
            return len(sink.messages) >= 2

        await wait_until(relayed, 30)
        assert len(started) == 1
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) >= 2
        await proxy.close()


async def test_a_relay_with_an_unknown_user_still_fails_at_once(dsn: str, settings: LockSettings) -> None:
    """Retrying is for outages only: settings that can never work end the relay."""
    from omninode_bridge.events.runner import relay_until_stopped
    from omninode_bridge.locks.errors import LockError

    parts = urlsplit(dsn)  # the same server and database as another user (any DSN form)
    bad = settings.replace(
        dsn=urlunsplit(parts._replace(netloc="nobody_here@" + parts.netloc.rsplit("@", 1)[-1]))
    )
    with pytest.raises(LockError):
        await asyncio.wait_for(relay_until_stopped(bad, asyncio.Event(), ListSink), 20)


async def test_the_outage_warning_names_the_target_without_its_password(
    settings: LockSettings, caplog: pytest.LogCaptureFixture
) -> None:
    from omninode_bridge.events.runner import relay_until_stopped

    stop = asyncio.Event()
    bad = settings.replace(dsn="postgresql://bob:Sekr1tPW@127.0.0.1:1/locks", connect_timeout=1.0)
    task = asyncio.create_task(relay_until_stopped(bad, stop, ListSink))
    await asyncio.sleep(0.5)
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0
    warnings = [r.getMessage() for r in caplog.records if "cannot reach the database" in r.getMessage()]
    assert len(warnings) == 1, "one warning per outage, not one per attempt"
    assert "127.0.0.1:1" in warnings[0] and "Sekr1tPW" not in caplog.text
