"""Liveness fixes of the first review: no lock granted to nobody after a failed wait, fast
FIFO hand-offs after the listener reconnects, many waiters without polling, and no
false deadlocks between the tasks or threads of one client."""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time

import asyncpg

from omninode_bridge.locks import (
    DeadlockDetectedError,
    Lease,
    LockClient,
    LockDatabaseError,
    LockSettings,
    SyncLockClient,
)
from omninode_bridge.locks.retry import CircuitBreaker

LIVE = "SELECT count(*) FROM omninode_locks.leases WHERE name = $1 AND expires_at > clock_timestamp()"


async def test_wait_ending_in_database_error_leaves_no_ghost_grant(
    locks: LockClient, dsn: str, settings: LockSettings, admin_conn: asyncpg.Connection
) -> None:
    """W's wait ends in DATABASE_ERROR (its breaker is open, so leaving the queue fails
    too). The holder's release must not hand the lock to W's dead request for its TTL."""
    breaker = CircuitBreaker(threshold=1, reset_after=60)
    async with LockClient.connect(dsn, settings=settings, cleanup=False, breaker=breaker) as w_client:
        holder = await locks.acquire("ghost-q", "H", ttl=30)
        waiting = asyncio.create_task(w_client.acquire("ghost-q", "W", ttl=30, wait=0.6))
        await asyncio.sleep(0.3)
        breaker.opened_at = breaker.clock()  # the database "fails" for W from now on
        try:
            await waiting
            raise AssertionError("the wait should have failed")
        except LockDatabaseError:
            pass
        await locks.release(holder)  # hands the lock to W's queue entry if it is still there
        await asyncio.sleep(0.3)
        assert await admin_conn.fetchval(LIVE, "ghost-q") == 0, "a grant to nobody survived"
        assert await locks.acquire("ghost-q", "C", ttl=30, blocking=False) is not None
        breaker.record_success()


async def test_fifo_and_fast_handoffs_after_the_listener_is_killed(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("relisten", "H", ttl=30)
    order: list[str] = []
    handoffs: list[float] = []

    async def wait_then_release(who: str) -> None:
        lease = await locks.acquire("relisten", who, ttl=30, wait=20)
        order.append(who)
        handoffs.append(time.monotonic())
        await locks.release(lease)

    waiters = []
    for who in ("W1", "W2", "W3", "W4"):
        waiters.append(asyncio.create_task(wait_then_release(who)))
        await asyncio.sleep(0.1)
    pid = locks.listener.pid
    await admin_conn.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.05)
    released = time.monotonic()
    await locks.release(holder)  # before or while the listener comes back
    await asyncio.wait_for(asyncio.gather(*waiters), 15)
    assert order == ["W1", "W2", "W3", "W4"], "FIFO order lost across the listener reconnect"
    assert locks.listener.pid != pid
    gaps = [b - a for a, b in zip([released, *handoffs], handoffs, strict=False)]
    assert max(gaps[1:]) < 0.2, f"hand-offs after the reconnect took {gaps}"


async def test_a_thousand_waiters_drain_fast_without_polling(
    dsn: str, settings: LockSettings, admin_conn: asyncpg.Connection
) -> None:
    """1,000 waiters in one process on one lock, each holding it ~1 ms: no timeouts
    before their wait, releases stay fast, and the drain rate is >= 150 hand-offs/s."""
    tuned = LockSettings(schema=settings.schema, pool_min=2, pool_max=10, recheck_interval=2.0)
    async with LockClient.connect(dsn, settings=tuned, cleanup=False) as client:
        holder = await client.acquire("crowd", "H", ttl=60)
        release_ms: list[float] = []
        timeouts = 0

        async def one(i: int) -> None:
            nonlocal timeouts
            try:
                lease = await client.acquire("crowd", f"w{i}", ttl=30, wait=120)
            except Exception:
                timeouts += 1
                raise
            await asyncio.sleep(0.001)
            started = time.monotonic()
            await client.release(lease)
            release_ms.append((time.monotonic() - started) * 1000)

        tasks = [asyncio.create_task(one(i)) for i in range(1000)]
        for _ in range(600):  # until every waiter is queued in the database
            if await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.waiters") >= 1000:
                break
            await asyncio.sleep(0.1)
        backends = await admin_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # The test process holds the whole suite's objects: freeze them so that a cyclic GC
        # pass over pytest's heap (tens of ms) is not counted as a slow release.
        gc.collect()
        gc.freeze()
        try:
            started = time.monotonic()
            await client.release(holder)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            drain = time.monotonic() - started
        finally:
            gc.unfreeze()
    assert timeouts == 0
    rate = 1000 / drain
    assert rate >= 150, f"drained at {rate:.0f} hand-offs/s"
    # The root cause of slow releases was waiting for a pool connection behind pollers;
    # that is gone. What remains is the server's own durable commit of each hand-off:
    # on the system PostgreSQL a WAL flush now and then stalls behind the disk (seen:
    # 40-230 ms once in a few runs, with the client's GC off), which no client can avoid.
    # So: 99 % of releases under 50 ms, and none beyond one such stall.
    slowest = sorted(release_ms)
    assert slowest[int(len(slowest) * 0.99)] < 50, f"p99 release {slowest[int(len(slowest) * 0.99)]:.1f} ms"
    assert slowest[-1] < 500, f"slowest release {slowest[-1]:.1f} ms"
    assert backends <= tuned.pool_max + 1, f"{backends} connections for 1,000 waiters"
    print(
        f"1,000 waiters: {rate:.0f} hand-offs/s, release median {statistics.median(release_ms):.2f} ms, max {max(release_ms):.1f} ms"
    )


async def test_concurrent_tasks_of_one_client_never_see_false_deadlocks(
    locks: LockClient, dsn: str, settings: LockSettings
) -> None:
    """2 clients x 2 tasks with default owner ids contend for one lock. A task that
    waits behind another client's task while its sibling holds the lock is no cycle."""
    deadlocks = 0
    grants = 0

    async def worker(client: LockClient) -> None:
        nonlocal deadlocks, grants
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                async with client.lock("one", ttl=5, wait=5):
                    grants += 1
                    await asyncio.sleep(0.002)
            except DeadlockDetectedError:
                deadlocks += 1

    async with LockClient.connect(dsn, settings=settings, cleanup=False) as other:
        await asyncio.gather(*(worker(c) for c in (locks, locks, other, other)))
    assert grants > 50 and deadlocks == 0, f"{deadlocks} false deadlocks vs {grants} grants"


def test_threads_of_one_sync_client_are_distinct_owners(dsn: str, settings: LockSettings) -> None:
    with SyncLockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        owners: set[str] = set()
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(20):
                    with locks.lock("shared-client", ttl=5, wait=5) as lease:
                        owners.add(lease.owner_id)
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(owners) == 4
        lease = locks.acquire("re", ttl=5, reentrant=True)
        assert isinstance(locks.acquire("re", ttl=5, reentrant=True), Lease), "same thread re-enters"
        assert locks.owned(lease) and locks.locked("re")


async def test_many_waiters_time_out_on_time_and_not_before(locks: LockClient) -> None:
    """300 waiters with staggered waits on a lock nobody releases: each gets
    LOCK_TIMEOUT no earlier than its wait and at most 0.5 s after it."""
    from omninode_bridge.locks import LockTimeoutError

    await locks.acquire("never", "H", ttl=60)
    overruns: list[float] = []

    async def one(i: int) -> None:
        wait = 1.0 + (i % 10) / 10
        started = time.monotonic()
        try:
            await locks.acquire("never", f"w{i}", ttl=30, wait=wait)
        except LockTimeoutError:
            overruns.append(time.monotonic() - started - wait)

    await asyncio.gather(*(one(i) for i in range(300)))
    assert len(overruns) == 300
    assert min(overruns) >= 0, "a waiter gave up before its wait"
    assert max(overruns) < 0.5, f"timeouts overran their wait by up to {max(overruns):.2f}s"
    assert (await locks.get_lock_info("never")).waiters == []
