"""Lock semantics against a real PostgreSQL: modes, FIFO, expiry, release, extend."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import pytest

from omninode_bridge.locks import (
    LockClient,
    LockExpiredError,
    LockHeldByOtherError,
    LockMode,
    LockNotFoundError,
    LockNotHeldError,
    LockSettings,
    LockTimeoutError,
    LockValidationError,
)


async def expire_now(conn: asyncpg.Connection, lease_id: str) -> None:
    """Move a lease's expiry into the past on the database clock (no sleeping)."""
    await conn.execute(
        "UPDATE omninode_locks.leases SET expires_at = now() - interval '1 second' WHERE lease_id = $1",
        lease_id,
    )


async def test_try_lock_grants_then_refuses(locks: LockClient) -> None:
    lease = await locks.acquire("jobs:nightly", "a", ttl=30)
    assert lease.token == 1 and lease.mode is LockMode.EXCLUSIVE and lease.ttl == 30
    assert (lease.expires_at - lease.acquired_at).total_seconds() == pytest.approx(30)
    with pytest.raises(LockHeldByOtherError) as info:
        await locks.acquire("jobs:nightly", "b", ttl=30)
    assert info.value.details["holders"] == ["a"]
    assert 0 < info.value.details["retry_after_ms"] <= 30_000


async def test_released_lock_is_free_at_once(locks: LockClient) -> None:
    """The original node kept a released lock blocked until expiry."""
    first = await locks.acquire("r", "a", ttl=3600)
    assert await locks.release(first) is True
    second = await locks.acquire("r", "b", ttl=30)
    assert second.token > first.token
    assert await locks.release(first) is False  # idempotent: already released


async def test_expired_lease_is_free_and_its_holder_cannot_release_or_extend(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    old = await locks.acquire("exp", "a", ttl=30)
    await expire_now(admin_conn, old.lease_id)
    new = await locks.acquire("exp", "b", ttl=30)
    assert new.token > old.token
    with pytest.raises(LockExpiredError):
        await locks.release(old)
    with pytest.raises(LockExpiredError):
        await locks.extend(old)
    info = await locks.get_lock_info("exp")
    assert [h.owner_id for h in info.holders] == ["b"], "the stale release must free nothing"
    events = [e["event_type"] for e in await locks.recent_events("exp")]
    assert events.count("lock_expired") == 1 and "lock_released" not in events


async def test_expired_but_unreaped_lease_reports_expired(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    lease = await locks.acquire("exp2", "a", ttl=30)
    await expire_now(admin_conn, lease.lease_id)
    with pytest.raises(LockExpiredError):
        await locks.extend(lease)
    with pytest.raises(LockExpiredError):
        await locks.release(lease)
    assert (await locks.counts())["expired_unreaped"] == 0


async def test_unknown_lease_is_not_held(locks: LockClient) -> None:
    with pytest.raises(LockNotHeldError):
        await locks.release("00000000-0000-4000-8000-000000000000")
    with pytest.raises(LockValidationError):
        await locks.release("not-a-uuid")


async def test_extend_renews_by_database_clock(locks: LockClient) -> None:
    lease = await locks.acquire("ext", "a", ttl=5)
    before = lease.expires_at
    await asyncio.sleep(0.05)
    await locks.extend(lease, ttl=60)
    assert lease.ttl == 60 and lease.expires_at > before
    assert lease.remaining() > 59
    kinds = [e["event_type"] for e in await locks.recent_events("ext")]
    assert kinds[0] == "lock_extended"


async def test_shared_holders_coexist_and_block_writers(locks: LockClient) -> None:
    readers = [await locks.acquire("rw", f"r{i}", mode="shared", ttl=30) for i in range(3)]
    assert len({r.token for r in readers}) == 3
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("rw", "w", mode="exclusive", ttl=30)
    for r in readers:
        await locks.release(r)
    writer = await locks.acquire("rw", "w", ttl=30)
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("rw", "r9", mode="shared", ttl=30)
    await locks.release(writer)


async def test_semaphore_admits_permits_holders(locks: LockClient) -> None:
    held = [await locks.acquire("gpu", f"o{i}", permits=3, ttl=30) for i in range(3)]
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("gpu", "o4", ttl=30)
    with pytest.raises(LockValidationError, match="permits=3"):
        await locks.acquire("gpu", "o5", permits=5, ttl=30)
    await locks.release(held[0])
    fourth = await locks.acquire("gpu", "o4", ttl=30)
    assert fourth.token > max(h.token for h in held)
    info = await locks.get_lock_info("gpu")
    assert info.permits == 3 and len(info.holders) == 3


async def test_reentrant_acquire_returns_same_lease_with_hold_count(locks: LockClient) -> None:
    first = await locks.acquire("re", "a", ttl=30, reentrant=True)
    again = await locks.acquire("re", "a", ttl=30, reentrant=True)
    assert again.lease_id == first.lease_id and again.token == first.token and again.hold_count == 2
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("re", "a", ttl=30)  # without reentrant: like any other owner
    await locks.release(first)
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("re", "b", ttl=30)  # still held once
    await locks.release(first)
    await locks.acquire("re", "b", ttl=30)


async def test_fifo_order_under_contention(locks: LockClient) -> None:
    holder = await locks.acquire("fifo", "h", ttl=30)
    order: list[str] = []

    async def wait_for_it(who: str) -> None:
        lease = await locks.acquire("fifo", who, ttl=30, wait=10)
        order.append(who)
        await asyncio.sleep(0.01)
        await locks.release(lease)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(wait_for_it(f"w{i}")))
        await asyncio.sleep(0.05)  # enqueue in a known order
    await locks.release(holder)
    await asyncio.gather(*tasks)
    assert order == [f"w{i}" for i in range(6)]


async def test_writer_is_not_starved_by_a_stream_of_readers(locks: LockClient) -> None:
    reader = await locks.acquire("stream", "r0", mode="shared", ttl=30)
    writer = asyncio.create_task(locks.acquire("stream", "writer", ttl=30, wait=10))
    await asyncio.sleep(0.1)
    # new readers arriving after the writer queue behind it instead of barging in
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("stream", "r1", mode="shared", ttl=30)
    late_reader = asyncio.create_task(locks.acquire("stream", "r2", mode="shared", ttl=30, wait=10))
    await asyncio.sleep(0.1)
    assert not writer.done() and not late_reader.done()
    await locks.release(reader)
    granted = await asyncio.wait_for(writer, 5)
    assert granted.owner_id == "writer"
    await asyncio.sleep(0.1)
    assert not late_reader.done()
    await locks.release(granted)
    assert (await asyncio.wait_for(late_reader, 5)).owner_id == "r2"


async def test_consecutive_shared_waiters_are_granted_together(locks: LockClient) -> None:
    writer = await locks.acquire("batch", "w", ttl=30)
    readers = [
        asyncio.create_task(locks.acquire("batch", f"r{i}", mode="shared", ttl=30, wait=10)) for i in range(4)
    ]
    await asyncio.sleep(0.2)
    await locks.release(writer)
    leases = await asyncio.wait_for(asyncio.gather(*readers), 5)
    assert len({lease.lease_id for lease in leases}) == 4


async def test_a_hand_off_grants_in_the_releasing_transaction_as_any_grant(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """Migration 0007 grants the head of the queue in one statement. What the release's
    transaction committed, read as soon as the release returns: the shared head and the
    shared waiter behind it both granted (the head's grant is followed by the loop), the
    exclusive one after them still queued, each grant recorded as a waited grant with a
    token drawn after the writer's; then the exclusive waiter gets the lock from the
    last reader's release."""
    writer = await locks.acquire("head", "w", ttl=30)
    queued = []
    for who, mode in (("s1", "shared"), ("s2", "shared"), ("x", "exclusive")):
        queued.append(asyncio.create_task(locks.acquire("head", who, mode=mode, ttl=30, wait=10)))
        await asyncio.sleep(0.1)  # queue in a known order
    await locks.release(writer)
    held = await admin_conn.fetch(
        "SELECT owner_id, mode, token FROM omninode_locks.leases WHERE name = 'head' ORDER BY token"
    )
    assert [(r["owner_id"], r["mode"]) for r in held] == [("s1", "shared"), ("s2", "shared")]
    assert all(r["token"] > writer.token for r in held)
    waiting = await admin_conn.fetch("SELECT owner_id FROM omninode_locks.waiters WHERE name = 'head'")
    assert [r["owner_id"] for r in waiting] == ["x"]
    granted = await admin_conn.fetch(
        "SELECT owner_id, payload FROM omninode_locks.events "
        "WHERE lock_name = 'head' AND event_type = 'lock_acquired' ORDER BY id"
    )
    assert [(r["owner_id"], json.loads(r["payload"])["waited"]) for r in granted] == [
        ("w", False),
        ("s1", True),
        ("s2", True),
    ]
    readers = await asyncio.wait_for(asyncio.gather(*queued[:2]), 5)
    for lease in readers:
        await locks.release(lease)
    last = await asyncio.wait_for(queued[2], 5)
    assert last.owner_id == "x" and last.token > max(r["token"] for r in held)
    await locks.release(last)


async def test_a_waiter_skips_the_fast_path_while_this_process_waits_for_the_lock(
    locks: LockClient,
) -> None:
    """The one-statement fast path grants only a lock nobody queues for: while a waiter of
    this process waits for the name, a new blocking acquire goes straight to the queue
    (one round trip less, no row lock taken for nothing); FIFO is kept, and once nobody
    waits the fast path is used again."""
    tried: list[str] = []
    fast = locks.fast_acquire

    async def spy(req: Any, deadline: float | None = None) -> Any:
        tried.append(req.owner_id)
        return await fast(req, deadline)

    locks.fast_acquire = spy  # type: ignore[method-assign]
    holder = await locks.acquire("fp", "h", ttl=30)
    tried.clear()
    first = asyncio.create_task(locks.acquire("fp", "a", ttl=30, wait=10))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(locks.acquire("fp", "b", ttl=30, wait=10))
    await asyncio.sleep(0.2)
    assert tried == ["a"] and locks.listener.waits_for("fp")
    await locks.release(holder)
    a = await asyncio.wait_for(first, 5)
    await locks.release(a)
    b = await asyncio.wait_for(second, 5)
    assert (a.owner_id, b.owner_id) == ("a", "b") and b.token > a.token
    await locks.release(b)
    assert not locks.listener.waits_for("fp")
    again = await locks.acquire("fp", "c", ttl=30, wait=10)
    assert tried == ["a", "c"]
    await locks.release(again)


async def test_wait_times_out_and_leaves_the_queue(locks: LockClient) -> None:
    await locks.acquire("slow", "a", ttl=30)
    started = time.monotonic()
    with pytest.raises(LockTimeoutError):
        await locks.acquire("slow", "b", ttl=30, wait=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert (await locks.get_lock_info("slow")).waiters == []


async def test_waiter_is_granted_when_the_holder_expires(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("lapse", "a", ttl=2)
    started = time.monotonic()
    lease = await locks.acquire("lapse", "b", ttl=30, wait=10)
    waited = time.monotonic() - started
    assert lease.owner_id == "b" and lease.token > holder.token
    assert 1.5 < waited < 2.6, f"expiry hand-off took {waited:.3f}s"


async def test_cancelled_waiter_leaves_no_trace(locks: LockClient) -> None:
    holder = await locks.acquire("cxl", "a", ttl=30)
    task = asyncio.create_task(locks.acquire("cxl", "b", ttl=30, wait=10))
    await asyncio.sleep(0.1)
    assert len((await locks.get_lock_info("cxl")).waiters) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await locks.get_lock_info("cxl")).waiters == []
    await locks.release(holder)
    await locks.acquire("cxl", "c", ttl=30)


async def test_info_list_counts_force_release_and_cleanup(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    with pytest.raises(LockNotFoundError):
        await locks.get_lock_info("nope")
    a = await locks.acquire("svc:a", "o1", ttl=30, metadata={"job": 7})
    await locks.acquire("svc:b", "o2", ttl=5)
    await locks.acquire("other", "o1", ttl=30)
    assert [s.name for s in await locks.list_locks(prefix="svc:")] == ["svc:a", "svc:b"]
    assert [s.name for s in await locks.list_locks(owner_id="o1")] == ["other", "svc:a"]
    assert [s.name for s in await locks.list_locks(expiring_within=10)] == ["svc:b"]
    page1 = await locks.list_locks(limit=2)
    page2 = await locks.list_locks(limit=2, after=page1[-1].name)
    assert [s.name for s in page1 + page2] == ["other", "svc:a", "svc:b"]
    info = await locks.get_lock_info("svc:a")
    assert info.holders[0].metadata == {"job": 7} and info.last_token == a.token
    counts = await locks.counts()
    assert counts["active_locks"] == 3 and counts["active_leases"] == 3

    assert await locks.force_release("svc:a", "stuck job") == 1
    with pytest.raises(LockNotHeldError, match="force-released: stuck job"):
        await locks.release(a)
    with pytest.raises(LockNotFoundError):
        await locks.force_release("never-used", "x")

    await admin_conn.execute(
        "UPDATE omninode_locks.leases SET expires_at = now() - interval '1 s' WHERE name = 'svc:b'"
    )
    assert await locks.cleanup_expired() == 1
    assert (await locks.counts())["active_leases"] == 1
    kinds = {e["event_type"] for e in await locks.recent_events()}
    assert {"lock_acquired", "lock_force_released", "lock_expired"} <= kinds


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": ""}, "1-255"),
        ({"name": "x" * 256}, "1-255"),
        ({"name": "a\x00b"}, "NUL"),
        ({"ttl": 0.5}, "ttl"),
        ({"ttl": 3601}, "ttl"),
        ({"wait": -1}, "wait"),
        ({"mode": "upgrade"}, "mode"),
        ({"permits": 0}, "permits"),
        ({"metadata": {"blob": "x" * 5000}}, "4096"),
        ({"metadata": [1, 2]}, "JSON object"),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(
    locks: LockClient, kwargs: dict[str, object], problem: str
) -> None:
    args: dict[str, object] = {"name": "valid", "owner_id": "o", "ttl": 30}
    args.update(kwargs)
    with pytest.raises(LockValidationError, match=problem):
        await locks.acquire(**args)  # type: ignore[arg-type]
    assert (await locks.counts())["known_locks"] == 0


async def test_waiters_share_one_listen_connection_and_only_grantees_wake(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("crowd", "h", ttl=30)
    waiters = [asyncio.create_task(locks.acquire("crowd", f"w{i}", ttl=30, wait=10)) for i in range(10)]
    await asyncio.sleep(0.3)
    listening = await admin_conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    assert listening == 1
    before = locks.listener.notifications
    await locks.release(holder)
    first = await asyncio.wait_for(asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED), 5)
    await asyncio.sleep(0.2)
    assert len(first[0]) == 1 and sum(t.done() for t in waiters) == 1
    assert locks.listener.notifications - before == 1, "one release, one grant, one notification"
    for t in waiters:
        t.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_lost_notification_is_covered_by_the_slow_recheck(locks: LockClient) -> None:
    holder = await locks.acquire("lost", "h", ttl=30)
    waiting = asyncio.create_task(locks.acquire("lost", "w", ttl=30, wait=10))
    await asyncio.sleep(0.2)
    conn = locks.listener._conn
    assert conn is not None
    await conn.remove_listener(locks.listener.channel or "", locks.listener._on_notify)  # deaf
    started = time.monotonic()
    await locks.release(holder)
    lease = await asyncio.wait_for(waiting, 5)
    assert lease.owner_id == "w"
    assert time.monotonic() - started <= locks.settings.recheck_interval + 0.5


OTHER_PROCESS_WAITER = """
import asyncio, sys
from omninode_bridge.locks import LockClient, LockSettings
async def main():
    async with LockClient.connect(sys.argv[1], settings=LockSettings(pool_min=1, pool_max=2), cleanup=False) as c:
        waiting = asyncio.create_task(c.acquire("a2", "w2", ttl=30, wait=10))
        await asyncio.sleep(0.3)
        print("waiting", c.listener.pid, flush=True)
        lease = await waiting
        print("granted", lease.token, c.listener.notifications, flush=True)
asyncio.run(main())
"""


async def test_clients_of_one_process_share_a_listener_and_grants_reach_only_their_process(
    dsn: str, settings: LockSettings, admin_conn: asyncpg.Connection
) -> None:
    """One LISTEN connection per process; each listener has its own channel, so another
    process's grant never wakes this one."""
    async with (
        LockClient.connect(dsn, settings=settings, cleanup=False) as one,
        LockClient.connect(dsn, settings=settings, cleanup=False) as two,
    ):
        held = [await one.acquire(n, "h", ttl=30) for n in ("a1", "a2", "a3")]
        mine = asyncio.create_task(one.acquire("a1", "w1", ttl=30, wait=10))
        also_mine = asyncio.create_task(two.acquire("a3", "w3", ttl=30, wait=10))
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OTHER_PROCESS_WAITER, dsn, stdout=subprocess.PIPE
        )
        assert other.stdout is not None
        waiting_line = (await asyncio.wait_for(other.stdout.readline(), 30)).split()
        assert waiting_line[0] == b"waiting"
        assert one.listener is two.listener
        # the waiters' queue rows name the listening backends: one per process
        listeners = await admin_conn.fetch(
            "SELECT DISTINCT listener_pid FROM omninode_locks.waiters WHERE listener_pid IS NOT NULL"
        )
        assert {r["listener_pid"] for r in listeners} == {one.listener.pid, int(waiting_line[1])}
        assert one.listener.pid != int(waiting_line[1]), (
            "one LISTEN connection in this process, one in the other"
        )
        await one.release(held[0])
        await one.release(held[2])
        await asyncio.wait_for(asyncio.gather(mine, also_mine), 5)
        await one.release(held[1])
        line = (await asyncio.wait_for(other.stdout.readline(), 10)).split()
        assert line[0] == b"granted" and int(line[1]) > held[1].token and line[2] == b"1"
        await other.wait()
        await asyncio.sleep(0.1)
        assert one.listener.notifications == 2, "the other process's grant never reached us"


async def test_prune_bounds_tables_and_tokens_keep_growing(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    first = await locks.acquire("job:1", "a", ttl=30)
    await locks.release(first)
    await locks.acquire("sem", "a", ttl=30, permits=3)
    held = await locks.acquire("job:held", "a", ttl=30)
    await admin_conn.execute("UPDATE omninode_locks.locks SET touched_at = now() - interval '2 hours'")
    await admin_conn.execute("UPDATE omninode_locks.events SET created_at = now() - interval '2 days'")
    recent = await locks.acquire("job:2", "a", ttl=30)  # its events are recent
    events, pruned_locks = await locks.prune()
    assert pruned_locks == 1  # job:1 only: "sem" keeps its permits, "job:held" is held
    assert events == 4  # job:1 acquired + released, sem and job:held acquired: all old
    remaining = {r["name"] for r in await admin_conn.fetch("SELECT name FROM omninode_locks.locks")}
    assert remaining == {"sem", "job:held", "job:2"}
    again = await locks.acquire("job:1", "b", ttl=30)
    assert again.token > max(first.token, held.token, recent.token), "tokens never go back"
    assert [e["event_type"] for e in await locks.recent_events("job:2")] == ["lock_acquired"]
    with pytest.raises(LockNotHeldError):  # its ending event was pruned with the rest
        await locks.release(first)


async def test_a_reentrant_acquire_with_its_own_lease_id_enters_only_that_lease(locks: LockClient) -> None:
    """Proof of possession: with a caller-chosen id, re-entry is by that id, never by the
    (public) owner id, so naming a holder's owner id does not reveal its lease."""
    mine = str(uuid.uuid4())
    first = await locks.acquire("re:id", "a", ttl=30, reentrant=True, lease_id=mine)
    again = await locks.acquire("re:id", "a", ttl=30, reentrant=True, lease_id=mine)
    assert again.lease_id == first.lease_id == mine and again.hold_count == 2
    stranger = await locks.acquire(
        "re:id", "a", ttl=30, reentrant=True, lease_id=str(uuid.uuid4()), blocking=False
    )
    assert stranger is None, "another id claiming the owner must not enter the lease"
    assert (await locks.get_lock_info("re:id")).holders[0].hold_count == 2
    assert await locks.release(again) and await locks.release(first)
    assert not await locks.locked("re:id")
