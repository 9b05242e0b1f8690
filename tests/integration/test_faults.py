"""Correctness under faults: deadlocks, killed connections, crashed waiters, lost leases."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from proxy import CuttableProxy

from omninode_bridge.locks import (
    DeadlockDetectedError,
    LockClient,
    LockDatabaseError,
    LockExpiredError,
    LockSettings,
    LockTimeoutError,
    LockValidationError,
)
from omninode_bridge.locks.retry import CircuitBreaker, RetryPolicy


async def test_deadlock_cycle_fails_one_side_within_a_second(locks: LockClient) -> None:
    await locks.acquire("x", "A", ttl=30)
    await locks.acquire("y", "B", ttl=30)
    a_waits = asyncio.create_task(locks.acquire("y", "A", ttl=30, wait=20))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(DeadlockDetectedError) as info:
        await locks.acquire("x", "B", ttl=30, wait=20)
    assert time.monotonic() - started < 1.0
    assert info.value.details["cycle"] == ["B", "A", "B"]
    assert not a_waits.done(), "only the request closing the cycle fails"
    a_waits.cancel()
    events = [e["event_type"] for e in await locks.recent_events()]
    assert "deadlock_detected" in events
    assert locks.stats.deadlocks == 1


async def test_three_party_cycle_is_detected(locks: LockClient) -> None:
    for name, owner in (("p", "A"), ("q", "B"), ("r", "C")):
        await locks.acquire(name, owner, ttl=30)
    t1 = asyncio.create_task(locks.acquire("q", "A", ttl=30, wait=20))
    t2 = asyncio.create_task(locks.acquire("r", "B", ttl=30, wait=20))
    await asyncio.sleep(0.2)
    with pytest.raises(DeadlockDetectedError):
        await locks.acquire("p", "C", ttl=30, wait=20)
    for t in (t1, t2):
        t.cancel()


async def test_waiting_without_a_cycle_is_not_a_deadlock(locks: LockClient) -> None:
    await locks.acquire("x", "A", ttl=30)
    b = await locks.acquire("y", "B", ttl=30)
    waiting = asyncio.create_task(locks.acquire("y", "A", ttl=30, wait=5))
    await asyncio.sleep(0.1)
    await locks.release(b)
    assert (await asyncio.wait_for(waiting, 5)).owner_id == "A"


async def test_terminated_connections_never_lose_or_duplicate_grants(
    dsn: str,
    settings: LockSettings,
    admin_conn: asyncpg.Connection,
    check_counters: Callable[[str], Awaitable[None]],
) -> None:
    """Kill the client's backends over and over while it acquires and releases."""
    policy = RetryPolicy(base_delay=0.005, max_delay=0.05, max_attempts=30)
    breaker = CircuitBreaker(threshold=1000)
    async with LockClient.connect(
        dsn, settings=settings, cleanup=False, retry=policy, breaker=breaker
    ) as locks:
        stop = asyncio.Event()

        async def killer() -> None:
            while not stop.is_set():
                await admin_conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = '' AND state <> 'idle in transaction'"
                )
                await asyncio.sleep(0.02)

        granted: list[str] = []
        failed = 0
        kill_task = asyncio.create_task(killer())
        for i in range(60):
            try:
                lease = await locks.acquire(f"k{i % 3}", "o", ttl=30)
                granted.append(lease.lease_id)
                await locks.release(lease)
            except LockDatabaseError:
                failed += 1
        stop.set()
        await kill_task
        assert locks.stats.retries > 0, "the killer never hit the client; the test proved nothing"
        rows = await admin_conn.fetch(
            "SELECT lease_id::text, count(*) FILTER (WHERE event_type = 'lock_acquired') AS grants, "
            "count(*) FILTER (WHERE event_type = 'lock_released') AS releases "
            "FROM omninode_locks.events GROUP BY lease_id"
        )
        by_id = {r["lease_id"]: r for r in rows}
        for lease_id in granted:  # each returned lease was granted exactly once and released once
            assert by_id[lease_id]["grants"] == 1 and by_id[lease_id]["releases"] == 1
        phantom = set(by_id) - set(granted)  # granted in the database, never returned
        assert len(phantom) <= failed
        leftover = await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.leases")
        # a grant whose reply was lost for good may stay until its TTL; never more than failures
        assert leftover <= failed
        assert len(granted) + failed == 60
    await check_counters(dsn)


async def test_listener_reconnects_and_waiters_still_get_the_lock(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("L", "a", ttl=30)
    waiting = asyncio.create_task(locks.acquire("L", "b", ttl=30, wait=10))
    await asyncio.sleep(0.2)
    pid = locks.listener.pid
    assert pid is not None
    await admin_conn.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.3)
    assert locks.listener.pid != pid
    await locks.release(holder)
    lease = await asyncio.wait_for(waiting, 5)
    assert lease.owner_id == "b"


CRASHING_WAITER = """
import asyncio, os, sys
from omninode_bridge.locks import LockClient, LockSettings
async def main():
    async with LockClient.connect(sys.argv[1], settings=LockSettings(pool_min=1, pool_max=2), cleanup=False) as locks:
        task = asyncio.create_task(locks.acquire("crash", "ghost", ttl=60, wait=60))
        await asyncio.sleep(0.5)
        print("queued", flush=True)
        os._exit(0)   # die without leaving the queue
asyncio.run(main())
"""


async def test_a_crashed_waiter_does_not_block_the_lock(locks: LockClient, dsn: str) -> None:
    holder = await locks.acquire("crash", "a", ttl=30)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WAITER, dsn, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"queued" in out, err.decode()
    await asyncio.sleep(0.3)  # let the server notice the dead backend
    await locks.release(holder)
    lease = await locks.acquire("crash", "c", ttl=30, wait=3)
    assert lease.owner_id == "c"
    assert (await locks.get_lock_info("crash")).waiters == []


async def test_auto_renew_keeps_a_long_holder(locks: LockClient) -> None:
    async with locks.lock("long", "a", ttl=1, auto_renew=True) as lease:
        await asyncio.sleep(2.2)
        lease.check()
    assert lease.lost is None


async def test_lost_lease_cancels_the_body_at_once(locks: LockClient) -> None:
    lost: list[str] = []
    started = time.monotonic()
    with pytest.raises(LockExpiredError, match="lost while held"):
        async with locks.lock("gone", "a", ttl=1, auto_renew=True, on_lost=lambda _l, why: lost.append(why)):
            await locks.force_release("gone", "operator")
            await asyncio.sleep(10)
    assert time.monotonic() - started < 1.5
    assert lost == ["LOCK_NOT_HELD"]


async def test_unreachable_database_fails_fast_after_the_breaker_opens() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_after=30, clock=lambda: clock[0])
    policy = RetryPolicy(base_delay=0.001, max_delay=0.002, max_attempts=2)
    settings = LockSettings(pool_min=1, pool_max=1)
    dead = "postgresql://nobody:s3cret@127.0.0.1:1/none"
    with pytest.raises(LockDatabaseError) as info:
        await LockClient.connect(dead, settings=settings, retry=policy, breaker=breaker)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


async def test_malformed_dsn_is_a_clear_validation_error() -> None:
    with pytest.raises(LockValidationError) as info:
        await LockClient.connect("postgresql://u:topsecret@127.0.0.1:notaport/db")
    assert "topsecret" not in str(info.value) and "invalid DSN" in str(info.value)


async def test_outage_opens_the_breaker_then_recovers(dsn: str, settings: LockSettings) -> None:
    """Calls fail with DATABASE_ERROR during an outage, then fail fast, then work again."""
    proxy = await CuttableProxy(dsn).start()
    breaker = CircuitBreaker(threshold=3, reset_after=0.5)
    policy = RetryPolicy(base_delay=0.005, max_delay=0.01, max_attempts=2)
    try:
        async with LockClient.connect(
            proxy.dsn, settings=settings, cleanup=False, retry=policy, breaker=breaker
        ) as locks:
            lease = await locks.acquire("outage", "a", ttl=30)
            proxy.cut()
            with pytest.raises(LockDatabaseError):
                await locks.release(lease)
            with pytest.raises(LockDatabaseError):
                await locks.acquire("other", "a", ttl=30)
            assert breaker.state == "open"
            started = time.monotonic()
            with pytest.raises(LockDatabaseError, match="circuit breaker open"):
                await locks.acquire("other", "a", ttl=30)
            assert time.monotonic() - started < 0.05, "an open breaker must fail fast"
            proxy.heal()
            await asyncio.sleep(0.6)
            assert await locks.release(lease) is True  # the retried release still works
            assert breaker.state == "closed"
            await locks.acquire("outage", "b", ttl=30)
    finally:
        await proxy.close()


async def test_two_readers_upgrading_to_writer_deadlock(locks: LockClient) -> None:
    """An owner that holds a shared lease and asks for the same lock exclusively waits
    for itself: that can never succeed, so it is reported at once, not after the wait."""
    await locks.acquire("doc", "A", mode="shared", ttl=30)
    await locks.acquire("doc", "B", mode="shared", ttl=30)
    for owner in ("A", "B"):
        started = time.monotonic()
        with pytest.raises(DeadlockDetectedError) as info:
            await locks.acquire("doc", owner, ttl=30, wait=20)
        assert info.value.details["cycle"] == [owner, owner]
        assert time.monotonic() - started < 1.0


async def test_a_reader_behind_another_upgrade_is_a_cycle(locks: LockClient) -> None:
    """B waits for an exclusive lock behind A's queued request, while A waits for a
    lock B holds: the cycle is closed by the second request and reported there."""
    await locks.acquire("x", "A", ttl=30)
    await locks.acquire("y", "B", ttl=30)
    a_waits = asyncio.create_task(locks.acquire("y", "A", ttl=30, wait=20))
    await asyncio.sleep(0.1)
    with pytest.raises(DeadlockDetectedError) as info:
        await locks.acquire("x", "B", ttl=30, wait=20)
    assert info.value.details["cycle"] == ["B", "A", "B"]
    a_waits.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await a_waits


async def test_semaphore_waits_are_not_deadlock_edges(locks: LockClient) -> None:
    """A and B each hold a permit of a 2-permit semaphore and a plain lock; waiting for
    a permit is not a cycle, since any holder's release frees one."""
    await locks.acquire("pool", "A", permits=2, ttl=30)
    await locks.acquire("pool", "B", permits=2, ttl=30)
    await locks.acquire("a-only", "A", ttl=30)
    b_waits = asyncio.create_task(locks.acquire("a-only", "B", ttl=30, wait=5))
    await asyncio.sleep(0.1)
    third = asyncio.create_task(locks.acquire("pool", "A", ttl=30, wait=0.3))
    with pytest.raises(LockTimeoutError):  # it waited, it was not refused as a deadlock
        await third
    b_waits.cancel()


async def test_a_wait_that_runs_out_during_an_outage_times_out_on_time(
    dsn: str, settings: LockSettings
) -> None:
    """The wait's end is kept even when the database stops answering right then: leaving
    the queue is bounded by a 1 s grace (DATABASE_ERROR; it used to take the engine's whole
    10 s per-statement bound of retries, or end in a breaker error later still) and
    finishes in the background once the database is back: the queue entry is gone and the
    waiter holds nothing."""
    proxy = await CuttableProxy(dsn).start()
    try:
        async with (
            LockClient.connect(dsn, settings=settings, cleanup=False) as holder,
            # a breaker that stays closed: the retries themselves must respect the wait
            LockClient.connect(
                proxy.dsn, settings=settings, cleanup=False, breaker=CircuitBreaker(threshold=1000)
            ) as waiter,
        ):
            await holder.acquire("outage-wait", "holder", ttl=30)
            task = asyncio.create_task(waiter.acquire("outage-wait", "waiter", ttl=30, wait=1.0))
            await asyncio.sleep(0.8)
            started = time.monotonic()
            proxy.cut()
            with pytest.raises(LockDatabaseError):
                await task
            late = time.monotonic() - started
            assert late < 0.2 + 1.0 + 0.6, f"the error came {late:.2f} s after the cut"
            proxy.heal()
            for _ in range(150):  # the background leave retries with backoff
                info = await holder.get_lock_info("outage-wait")
                if not info.waiters:
                    break
                await asyncio.sleep(0.1)
            assert info.waiters == [] and [h.owner_id for h in info.holders] == ["holder"]
    finally:
        await proxy.close()
