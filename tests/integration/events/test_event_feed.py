"""Following the outbox from PostgreSQL (no broker): long poll, stream, resume, gaps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import asyncpg
import pytest
from relay_helpers import make_events, outbox

from omninode_bridge.events import EventFeed, OutboxWakeup
from omninode_bridge.locks import LockClient, LockSettings

pytestmark = pytest.mark.integration
SCHEMA = "omninode_locks"


async def open_feed(dsn: str, pool: asyncpg.Pool) -> EventFeed:
    wakeup = OutboxWakeup(dsn, SCHEMA)
    await wakeup.start()
    return EventFeed(pool, SCHEMA, wakeup)


async def test_follow_resumes_from_after_with_no_gap_under_concurrent_writers(
    dsn: str, settings: LockSettings, pool: asyncpg.Pool
) -> None:
    feed = await open_feed(dsn, pool)
    seen: list[int] = []
    stop = asyncio.Event()

    async def follower() -> None:
        after = 0
        while not stop.is_set() or await feed.read(after, 1000):
            page = await feed.follow(after, wait=0.5, limit=37)  # small pages: many resumes
            seen.extend(e["id"] for e in page)
            if page:
                after = page[-1]["id"]

    async def writer(locks: LockClient, n: int) -> None:
        for i in range(150):
            lease = await locks.acquire(f"feed:{n}:{i % 5}", ttl=30)
            await locks.release(lease)

    task = asyncio.create_task(follower())
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        await asyncio.gather(*(writer(locks, n) for n in range(6)))
    stop.set()
    await asyncio.wait_for(task, 30)
    await feed.wakeup.close()  # type: ignore[union-attr]
    ids = [r["id"] for r in await outbox(dsn)]
    assert seen == ids, "every event once, in id order, across many resumed pages"


async def test_a_page_never_skips_an_id_still_in_flight(
    dsn: str, settings: LockSettings, pool: asyncpg.Pool
) -> None:
    feed = await open_feed(dsn, pool)
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        await locks.release(await locks.acquire("gap:0", ttl=30))
        start = await feed.last_id()
        slow = await asyncpg.connect(dsn)
        try:
            tx = slow.transaction()
            await tx.start()
            await slow.execute(  # draws the next outbox id, not committed yet
                "SELECT omninode_locks.acquire('gap:1', gen_random_uuid(), 'slow', 'exclusive', 30000, 0, "
                "NULL, false, '{}'::jsonb, NULL)"
            )
            await locks.release(await locks.acquire("gap:2", ttl=30))  # commits two later ids
            assert await feed.read(start, gap_wait=0.2) == [], "the page starts with an id still in flight"
            waiting = asyncio.create_task(feed.follow(start, wait=10))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await tx.commit()
            page = await asyncio.wait_for(waiting, 10)
        finally:
            await slow.close()
    assert [e["id"] for e in page] == [start + 1, start + 2, start + 3]
    assert [e["lock_name"] for e in page] == ["gap:1", "gap:2", "gap:2"]
    await feed.wakeup.close()  # type: ignore[union-attr]


async def test_a_page_is_served_only_once_the_log_is_flushed_past_it(
    dsn: str, settings: LockSettings, pool: asyncpg.Pool
) -> None:
    """A release that hands nothing on commits lazily: visible at once, on disk later.
    When the feed answers with it, the write-ahead log must be flushed past its commit,
    or a crash right after could take back an event a follower already saw."""
    feed = EventFeed(pool, SCHEMA)
    probe = await asyncpg.connect(dsn)
    try:
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            for i in range(8):
                lease = await locks.acquire(f"flushed:{i}", ttl=30, wait=0)
                after = await feed.last_id()
                await locks.release(lease)  # handed nothing on: committed lazily
                lsn = await probe.fetchval("SELECT pg_current_wal_insert_lsn()::text")
                page = await feed.read(after)
                assert [e["event_type"] for e in page] == ["lock_released"]
                assert await probe.fetchval("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", lsn), (
                    f"round {i}: the feed served the release before its commit was flushed"
                )
    finally:
        await probe.close()


async def test_long_poll_wakes_on_commit_not_by_polling(
    dsn: str, settings: LockSettings, pool: asyncpg.Pool
) -> None:
    feed = await open_feed(dsn, pool)
    feed.sweep = 60.0  # only a notification can wake it in time
    after = await feed.last_id()
    waiting = asyncio.create_task(feed.follow(after, wait=30))
    await asyncio.sleep(0.2)
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        started = time.monotonic()
        await locks.acquire("wake:1", ttl=30)
        page = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 2
    assert [e["event_type"] for e in page] == ["lock_acquired"]
    assert "lease_id" not in page[0] and "lease_id" not in page[0]["payload"]
    assert await feed.follow(page[-1]["id"], wait=0.1) == []
    await feed.wakeup.close()  # type: ignore[union-attr]


async def test_stream_yields_everything_and_heartbeats(dsn: str, pool: asyncpg.Pool) -> None:
    feed = await open_feed(dsn, pool)
    await make_events(dsn, 30)
    got: list[int] = []
    beats = 0
    async for item in feed.stream(0, limit=7, heartbeat=0.2):
        if item is None:
            beats += 1
            break
        got.append(item["id"])
    assert got == [r["id"] for r in await outbox(dsn)] and beats == 1
    await feed.wakeup.close()  # type: ignore[union-attr]


def _cli(dsn: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMNINODE_POSTGRES_DSN": dsn}
    env.pop("OMNINODE_KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.Popen([sys.executable, "-m", "omninode_bridge.events.cli", "events", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


async def test_cli_follow_prints_new_events_and_resumes_after_id(dsn: str, settings: LockSettings) -> None:
    await make_events(dsn, 3)
    rows = await outbox(dsn)
    listing = _cli(dsn, "--after", str(rows[1]["id"]), "--json")
    out, err = listing.communicate(timeout=60)
    assert listing.returncode == 0, err.decode()
    assert [json.loads(line)["id"] for line in out.decode().splitlines()] == [r["id"] for r in rows[2:]]

    follower = _cli(dsn, "--follow", "--after", str(rows[-1]["id"]), "--json")
    try:
        await asyncio.sleep(1.5)  # started and listening
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            await locks.release(await locks.acquire("cli:follow", ttl=30))
        await asyncio.sleep(2.0)  # the follower prints within its 1 s long poll
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [(e["event_type"], e["lock_name"]) for e in events] == [
        ("lock_acquired", "cli:follow"),
        ("lock_released", "cli:follow"),
    ]


def test_cli_relay_without_kafka_says_how_to_follow(dsn: str) -> None:
    env = {**os.environ, "OMNINODE_POSTGRES_DSN": dsn}
    env.pop("OMNINODE_KAFKA_BOOTSTRAP_SERVERS", None)
    done = subprocess.run([sys.executable, "-m", "omninode_bridge.events.cli", "relay"], env=env,
                          capture_output=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert b"VALIDATION_ERROR" in done.stderr and b"events --follow" in done.stderr


async def test_follow_still_wakes_after_the_listen_connection_was_killed(
    dsn: str, settings: LockSettings, pool: asyncpg.Pool
) -> None:
    feed = await open_feed(dsn, pool)
    feed.sweep = 60.0
    wakeup = feed.wakeup
    assert wakeup is not None
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    )
    assert killed == 1
    deadline = time.monotonic() + 10
    while not wakeup.connected:  # reconnects on its own
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    after = await feed.last_id()
    waiting = asyncio.create_task(feed.follow(after, wait=30))
    await asyncio.sleep(0.3)
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        started = time.monotonic()
        await locks.acquire("wake:again", ttl=30)
        page = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 2
    assert [e["lock_name"] for e in page] == ["wake:again"]
    await wakeup.close()
