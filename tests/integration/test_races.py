"""Races the first adversarial review found, each made to happen on purpose (a row lock
held from a second connection, a stalled event loop, a cancel at the awaited point)
and, where it was timing-dependent, repeated many times with random timing."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid

import asyncpg
import psycopg
import pytest

from omninode_bridge.locks import Lease, LockClient, LockExpiredError, LockHeldByOtherError

LIVE = "SELECT count(*) FROM omninode_locks.leases WHERE name = $1 AND expires_at > clock_timestamp()"
DB_REMAINING = (
    "SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 "
    "FROM omninode_locks.leases WHERE lease_id = $1"
)


async def db_remaining(conn: asyncpg.Connection, lease: Lease) -> float:
    """Seconds the database still honours ``lease`` (negative: gone or expired)."""
    value = await conn.fetchval(DB_REMAINING, lease.lease_id)
    return -1.0 if value is None else float(value)


async def assert_deadline_errs_early(conn: asyncpg.Connection, lease: Lease) -> None:
    """The client's estimate, read after the database's answer, is never the larger. A
    lease row already gone (it expired and another acquire reaped it) honours nothing:
    the client must not believe it has time left either (read after the row was found
    gone, its estimate has run out too if it errs early). Counting a gone row as -1 s
    failed a lease that expired and was reaped a few ms before the check."""
    real = await conn.fetchval(DB_REMAINING, lease.lease_id)
    local = lease.remaining()
    if real is None:
        assert local <= 0, f"client claims {local:.3f}s for a lease the database no longer has"
    else:
        assert local <= real, f"client claims {local:.3f}s, the database honours {real:.3f}s"


# -- 1. extend racing expiry ------------------------------------------------------


async def test_extend_racing_expiry_never_gives_two_holders(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """A slow extend (its lease row held by another transaction) straddles the expiry
    while another owner acquires: exactly one of them may win."""
    lease = await locks.acquire("race", "A", ttl=1)
    blocker = await asyncpg.connect(locks._dsn)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute(
        "SELECT 1 FROM omninode_locks.leases WHERE lease_id = $1 FOR UPDATE", lease.lease_id
    )
    await asyncio.sleep(0.8)  # still live when the extend is sent
    extending = asyncio.create_task(locks.extend(lease, 30))
    await asyncio.sleep(0.4)  # now expired by the database clock
    taking = asyncio.create_task(locks.acquire("race", "B", ttl=30, wait=5))
    await asyncio.sleep(0.3)
    await tx.commit()
    await blocker.close()
    outcomes = await asyncio.gather(extending, taking, return_exceptions=True)
    assert await admin_conn.fetchval(LIVE, "race") == 1, f"two live holders: {outcomes}"
    assert isinstance(outcomes[0], LockExpiredError), "the lease had expired before the extend decided"
    assert isinstance(outcomes[1], Lease)


async def test_randomized_extends_straddling_expiry(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """1,000 trials (100 locks x 10 rounds): A extends around its 1 s expiry while B
    keeps trying; never two live holders, and no deadline later than the database's."""
    rng = random.Random(20261201)
    double: list[str] = []
    trials = 0
    checks = await asyncpg.create_pool(locks._dsn, min_size=4, max_size=20)

    async def trial(name: str) -> None:
        nonlocal trials
        a = await locks.acquire(name, "A", ttl=1)
        async with checks.acquire() as conn:
            await assert_deadline_errs_early(conn, a)
        extend_at = rng.uniform(0.96, 1.02)
        take_at = rng.uniform(0.96, 1.02)

        async def extend() -> Lease | None:
            await asyncio.sleep(extend_at)
            try:
                return await locks.extend(a, 1)
            except LockExpiredError:
                return None

        async def take() -> Lease | None:
            await asyncio.sleep(take_at)
            for _ in range(5):
                got = await locks.acquire(name, "B", ttl=1, blocking=False)
                if got is not None:
                    return got
                await asyncio.sleep(0.01)
            return None

        extended, taken = await asyncio.gather(extend(), take())
        async with checks.acquire() as conn:
            if await conn.fetchval(LIVE, name) > 1 or (extended is not None and taken is not None):
                double.append(name)
            for held in (extended, taken):
                if held is not None:
                    await assert_deadline_errs_early(conn, held)
        await locks.force_release(name, "next trial")
        trials += 1

    try:
        for _ in range(10):
            await asyncio.gather(*(trial(f"straddle-{i}") for i in range(100)))
    finally:
        await checks.close()
    assert trials == 1000
    assert double == [], f"double holders in {len(double)} trials"


# -- 2. the client's deadline errs early, always -----------------------------------


async def test_grant_delivered_to_a_stalled_loop_counts_from_the_database(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("stall", "H", ttl=30)
    waiter = asyncio.create_task(locks.acquire("stall", "W", ttl=2, wait=10))
    await asyncio.sleep(0.2)

    def release_elsewhere() -> None:  # another process's release: grant + NOTIFY
        time.sleep(0.1)
        with psycopg.connect(locks._dsn, autocommit=True) as conn:
            conn.execute("SELECT * FROM omninode_locks.release(%s)", (holder.lease_id,))

    thread = threading.Thread(target=release_elsewhere)
    thread.start()
    time.sleep(1.6)  # noqa: ASYNC251 - the event loop is busy while the grant is announced
    thread.join()
    lease = await asyncio.wait_for(waiter, 5)
    assert lease.remaining() < 0.6, "1.5 s of a 2 s lease had passed before the grant was seen"
    await assert_deadline_errs_early(admin_conn, lease)


async def test_reentrant_acquire_reports_the_expiry_the_database_keeps(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    first = await locks.acquire("re", "A", ttl=30, reentrant=True)
    await admin_conn.execute(
        "UPDATE omninode_locks.leases SET expires_at = clock_timestamp() + interval '1.5 seconds' "
        "WHERE lease_id = $1",
        first.lease_id,
    )
    again = await locks.acquire("re", "A", ttl=1, reentrant=True)
    assert again.lease_id == first.lease_id and again.hold_count == 2
    assert again.remaining() < 1.6
    await assert_deadline_errs_early(admin_conn, again)


async def test_grant_after_a_long_wait_for_the_lock_row_is_not_born_expired(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """The release that hands the lock on waited 2.5 s for the lock row: the waiter's
    3 s lease must still have about 3 s when it arrives."""
    holder = await locks.acquire("slow-row", "H", ttl=30)
    waiter = asyncio.create_task(locks.acquire("slow-row", "W", ttl=3, wait=10))
    await asyncio.sleep(0.2)
    blocker = await asyncpg.connect(locks._dsn)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM omninode_locks.locks WHERE name = 'slow-row' FOR UPDATE")
    releasing = asyncio.create_task(locks.release(holder))
    await asyncio.sleep(2.5)
    await tx.commit()
    await blocker.close()
    await releasing
    lease = await asyncio.wait_for(waiter, 5)
    real = await db_remaining(admin_conn, lease)
    assert real > 2.5, f"the grant arrived with only {real:.2f}s of 3s"
    await assert_deadline_errs_early(admin_conn, lease)


async def test_lease_taken_late_in_the_callers_transaction_keeps_its_ttl(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    conn = await asyncpg.connect(locks._dsn)
    async with conn.transaction():
        await asyncio.sleep(2.1)
        lease = await locks.acquire("late-tx", "A", ttl=2, conn=conn)
    await conn.close()
    real = await db_remaining(admin_conn, lease)
    assert real > 1.5, "the lease was stamped from the transaction's start"
    await assert_deadline_errs_early(admin_conn, lease)


# -- 3, 10, 11. inside the caller's transaction ------------------------------------


async def test_callers_transaction_keeps_its_durability_and_no_row_lock_lingers(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    held = await locks.acquire("tx-lock", "H", ttl=30)
    conn = await asyncpg.connect(locks._dsn)  # a plain asyncpg connection, no codecs
    try:
        async with conn.transaction():
            with pytest.raises(LockHeldByOtherError):
                await locks.acquire("tx-lock", "A", ttl=30, conn=conn, metadata={"k": [1, 2]})
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            # the refusal left no row lock: the holder releases at once from elsewhere
            started = time.monotonic()
            await asyncio.wait_for(locks.release(held), 2)
            assert time.monotonic() - started < 0.5
            mine = await locks.acquire("tx-lock", "A", ttl=30, conn=conn, metadata={"k": [1, 2]})
            assert mine.metadata == {"k": [1, 2]}
            assert await locks.release(mine, conn=conn) is True
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await conn.close()
    assert await admin_conn.fetchval(LIVE, "tx-lock") == 0


async def test_a_refused_fast_attempt_commits_lazily_and_a_grant_durably(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """The one-statement fast path at a busy lock takes the lock row (ON CONFLICT locks
    the row before it tests its WHERE) and grants nothing: its commit must not wait for a
    WAL flush. A grant always commits durably. Each statement runs in a transaction here,
    rolled back, so the setting it leaves for its commit can be read."""
    held = await locks.acquire("fast-lazy", "H", ttl=30)
    conn = await asyncpg.connect(locks._dsn)
    try:
        for name, granted in (("fast-lazy", False), ("fast-free", True)):
            tx = conn.transaction()
            await tx.start()
            row = await conn.fetchrow(
                locks.queries["acquire_fast"], name, uuid.uuid4(), "A", "exclusive", 30_000, None, "{}", False
            )
            assert (row["token"] is not None) is granted
            assert await conn.fetchval("SHOW synchronous_commit") == ("on" if granted else "off")
            await tx.rollback()
    finally:
        await conn.close()
    await locks.release(held)
    assert await admin_conn.fetchval(LIVE, "fast-free") == 0


# -- 4. cancellation on the fast path ------------------------------------------------


async def test_cancel_at_the_awaited_point_leaves_no_ghost_lease(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """The try-lock's statement is stuck behind a row lock when its caller is cancelled;
    it then commits a grant nobody will ever release unless the client undoes it."""
    await locks.release(await locks.acquire("ghost", "seed", ttl=30))  # the lock row exists
    for wait in (0, 5):
        blocker = await asyncpg.connect(locks._dsn)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM omninode_locks.locks WHERE name = 'ghost' FOR UPDATE")
        task = asyncio.create_task(locks.acquire("ghost", "A", ttl=30, wait=wait))
        await asyncio.sleep(0.2)
        await tx.commit()  # the statement goes on and commits its grant...
        task.cancel()  # ...while its caller is cancelled before reading the reply
        await blocker.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        assert await admin_conn.fetchval(LIVE, "ghost") == 0, f"ghost lease after cancel (wait={wait})"


async def test_randomized_cancellation_of_acquires(locks: LockClient, admin_conn: asyncpg.Connection) -> None:
    rng = random.Random(7)
    for i in range(150):
        name = f"cancel-{i % 5}"
        task = asyncio.create_task(locks.acquire(name, f"o{i}", ttl=30, wait=rng.choice([0, 0.5])))
        await asyncio.sleep(rng.uniform(0, 0.004))
        task.cancel()
        try:
            lease = await task
        except (asyncio.CancelledError, LockHeldByOtherError):
            continue
        await locks.release(lease)  # it won before the cancel: ours to give back
    await asyncio.sleep(0.5)
    live = await admin_conn.fetchval(
        "SELECT count(*) FROM omninode_locks.leases WHERE expires_at > clock_timestamp()"
    )
    assert live == 0, f"{live} leases held by nobody after cancelled acquires"


# -- 7. cancel_wait racing its own grant ---------------------------------------------


async def test_cancel_racing_its_own_grant_keeps_the_counter_and_the_queue(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("c7", "H", ttl=30)
    waiter = asyncio.create_task(locks.acquire("c7", "W", ttl=30, wait=10))
    await asyncio.sleep(0.2)
    waiter_id = await admin_conn.fetchval("SELECT waiter_id FROM omninode_locks.waiters WHERE name = 'c7'")
    # the cancel reads the waiter row, then the release grants it before the cancel locks the row
    canceller = await asyncpg.connect(locks._dsn)
    tx = canceller.transaction()
    await tx.start()
    await canceller.execute("SELECT 1 FROM omninode_locks.locks WHERE name = 'c7' FOR UPDATE")
    cancelling = asyncio.create_task(
        admin_conn.fetchrow("SELECT * FROM omninode_locks.cancel_wait($1)", waiter_id)
    )
    await asyncio.sleep(0.1)
    await canceller.execute("SELECT * FROM omninode_locks.release($1)", holder.lease_id)
    await tx.commit()
    await canceller.close()
    row = await cancelling
    assert row["status"] == "granted"
    lease = await asyncio.wait_for(waiter, 5)
    n_waiting = await admin_conn.fetchval("SELECT n_waiting FROM omninode_locks.locks WHERE name = 'c7'")
    assert n_waiting == 0
    await locks.release(lease)
    # the counter says nobody queues, so the next try-lock takes the fast path at once
    assert isinstance(await locks.acquire("c7", "Q", ttl=30), Lease)


async def test_randomized_cancels_racing_grants_keep_counters_and_hand_offs(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """200 rounds: a waiter is cancelled at a random moment around the release that
    grants it. Afterwards nobody holds the lock and the counters match the rows (checked
    by the fixture), so the next request takes it at once."""
    rng = random.Random(11)
    for i in range(200):
        name = f"cw-{i % 4}"
        holder = await locks.acquire(name, "H", ttl=30)
        waiter = asyncio.create_task(locks.acquire(name, "W", ttl=30, wait=10))
        await asyncio.sleep(rng.uniform(0.002, 0.02))
        releasing = asyncio.create_task(locks.release(holder))
        await asyncio.sleep(rng.uniform(0, 0.003))
        waiter.cancel()
        await releasing
        with contextlib.suppress(asyncio.CancelledError):
            await locks.release(await waiter)  # the grant won the race: give it back
    await asyncio.sleep(0.3)
    live = await admin_conn.fetchval(
        "SELECT count(*) FROM omninode_locks.leases WHERE expires_at > clock_timestamp()"
    )
    queued = await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.waiters")
    assert (live, queued) == (0, 0)
    for i in range(4):
        assert await locks.acquire(f"cw-{i}", "N", ttl=30, blocking=False) is not None
