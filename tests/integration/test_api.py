"""The library as a new user meets it: bad input refused with VALIDATION_ERROR and no
change, unknown options refused with TypeError, redis-py's idioms, own connections."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import asyncpg
import pytest

from omninode_bridge.locks import LockClient, LockValidationError
from omninode_bridge.locks.queries import check_schema

SNAPSHOT = """
SELECT (SELECT count(*) FROM omninode_locks.locks) AS locks,
       (SELECT count(*) FROM omninode_locks.leases) AS leases,
       (SELECT count(*) FROM omninode_locks.events) AS events
"""


@pytest.mark.parametrize(
    "options",
    [
        {"metadata": {"x": math.nan}},
        {"metadata": {"x": math.inf}},
        {"metadata": {"x": -math.inf}},
        {"metadata": {"x": "a\x00b"}},
        {"metadata": {"a\x00": 1}},
        {"metadata": {"x": "\ud800"}},
        {"metadata": {"x": ["\udfff"]}},
    ],
)
async def test_metadata_postgres_cannot_store_is_a_validation_error(
    locks: LockClient, admin_conn: asyncpg.Connection, options: dict[str, Any]
) -> None:
    before = await admin_conn.fetchrow(SNAPSHOT)
    with pytest.raises(LockValidationError) as info:
        await locks.acquire("meta", "a", ttl=30, **options)
    assert info.value.code == "VALIDATION_ERROR"
    assert await admin_conn.fetchrow(SNAPSHOT) == before


@pytest.mark.parametrize("name", ["\ud800", "lock-\udfff", "a\x00"])
async def test_names_that_are_not_valid_text_are_refused(
    locks: LockClient, admin_conn: asyncpg.Connection, name: str
) -> None:
    before = await admin_conn.fetchrow(SNAPSHOT)
    with pytest.raises(LockValidationError):
        await locks.acquire(name, "a", ttl=30)
    with pytest.raises(LockValidationError):
        await locks.acquire("ok", name, ttl=30)
    assert await admin_conn.fetchrow(SNAPSHOT) == before


def test_schema_names_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(LockValidationError):
        check_schema("omninode_locks\n")
    assert check_schema("omninode_locks") == "omninode_locks"


async def test_a_semaphores_permits_are_not_silently_redeclared(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    lease = await locks.acquire("sem", "a", permits=2, ttl=30)
    await locks.release(lease)
    snapshot = "SELECT to_jsonb(t) FROM omninode_locks.locks t"
    before = await admin_conn.fetch(snapshot)
    for wait in (0, 5):  # try-lock and queueing acquire: refused, and nothing written
        with pytest.raises(LockValidationError, match="permits=2"):
            await locks.acquire("sem", "a", permits=5, ttl=30, wait=wait)
    assert await admin_conn.fetch(snapshot) == before, "a refused request changed the lock row"
    assert (await locks.get_lock_info("sem")).permits == 2
    second = await locks.acquire("sem", "b", ttl=30)  # no permits given: the declared ones hold
    assert second.lock_name == "sem"


async def test_unknown_options_raise_type_error_everywhere(locks: LockClient) -> None:
    with pytest.raises(TypeError, match="blocking_timeout"):
        async with locks.lock("x", timeout=10, blocking_timeout=5):  # type: ignore[call-arg]
            pass
    with pytest.raises(TypeError, match="timeout"):
        await locks.acquire("x", timeout=10)  # type: ignore[call-arg]
    assert not await locks.locked("x"), "nothing was acquired"


async def test_redis_py_idioms(locks: LockClient) -> None:
    first = await locks.acquire("idiom", "a", ttl=30, blocking=False)
    assert first is not None
    assert await locks.acquire("idiom", "b", ttl=30, blocking=False) is None
    assert await locks.acquire("idiom", "b", ttl=30, wait=0.2, blocking=False) is None
    assert await locks.locked("idiom") and await locks.owned(first)
    await locks.release(first)
    assert not await locks.locked("idiom") and not await locks.owned(first)


async def test_acquire_on_the_callers_own_asyncpg_connection(locks: LockClient, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)  # no JSON codec on this connection
    try:
        async with conn.transaction():
            lease = await locks.acquire("own-conn", "a", ttl=30, conn=conn, metadata={"job": 7})
            await locks.fence_guard(conn, "orders", lease.token)
        assert lease.metadata == {"job": 7}
        info = await locks.get_lock_info("own-conn")
        assert info.holders[0].metadata == {"job": 7}
        assert await locks.release(lease, conn=conn) is True
    finally:
        await conn.close()


async def test_a_client_supplied_lease_id_makes_a_retry_find_its_grant(locks: LockClient) -> None:
    lease_id = "0b0e7a5e-2f55-4a8c-9c51-6a4c1d0f9a11"
    first = await locks.acquire("idem", "a", ttl=30, lease_id=lease_id)
    again = await locks.acquire("idem", "a", ttl=30, lease_id=lease_id)
    assert first.lease_id == again.lease_id == lease_id and first.token == again.token
    with pytest.raises(LockValidationError):
        await locks.acquire("idem", "a", ttl=30, lease_id="not-a-uuid")


async def test_connect_reports_a_backend_lost_during_migration_as_database_error(
    dsn: str, admin_conn: asyncpg.Connection
) -> None:
    """The migration waits for the schema's advisory lock; its backend is killed."""
    from omninode_bridge.locks import LockDatabaseError, LockSettings

    settings = LockSettings(schema="dies_migrating", pool_min=1, pool_max=1)
    holder = await asyncpg.connect(dsn)
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT pg_advisory_xact_lock(hashtext($1), 1917)", "dies_migrating")
    opening = asyncio.ensure_future(LockClient.connect(dsn, settings=settings, cleanup=False))
    for _ in range(100):
        victim = await admin_conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if victim:
            break
        await asyncio.sleep(0.05)
    assert victim, "the migration never waited for the advisory lock"
    await admin_conn.execute("SELECT pg_terminate_backend($1)", victim)
    with pytest.raises(LockDatabaseError):
        await opening
    await tx.rollback()
    await holder.close()


async def test_a_busy_lock_says_who_holds_it(locks: LockClient) -> None:
    from omninode_bridge.locks import LockHeldByOtherError

    await locks.acquire("who", "billing-7", ttl=30)
    with pytest.raises(LockHeldByOtherError) as info:
        await locks.acquire("who", "reports-2", ttl=30)
    assert "billing-7" in str(info.value) and info.value.details["holders"] == ["billing-7"]
    assert info.value.to_wire()["error_code"] == "LOCK_HELD_BY_OTHER"


async def test_a_lease_id_is_never_someone_elses_nor_reused(locks: LockClient) -> None:
    lease_id = "5c1f0b8e-8e3a-4f4f-9d57-0b2b6d3c9e01"
    lease = await locks.acquire("mine", "a", ttl=30, lease_id=lease_id)
    for name, owner in (("other-lock", "a"), ("mine", "b")):
        with pytest.raises(LockValidationError, match="another request"):
            await locks.acquire(name, owner, ttl=30, wait=1 if owner == "b" else 0, lease_id=lease_id)
    await locks.release(lease)
    for name in ("mine", "brand-new-lock"):  # an ended lease's id is not reused, fast path or not
        with pytest.raises(LockValidationError, match="ended"):
            await locks.acquire(name, "a", ttl=30, lease_id=lease_id)


async def test_filters_and_reasons_postgres_cannot_take_are_validation_errors(locks: LockClient) -> None:
    for filters in ({"prefix": "a\x00"}, {"owner_id": "\ud800"}, {"after": "x\x00"}):
        with pytest.raises(LockValidationError):
            await locks.list_locks(**filters)
    await locks.acquire("fr", "a", ttl=30)
    for reason in ("", "why\x00", "x" * 1001):
        with pytest.raises(LockValidationError):
            await locks.force_release("fr", reason)
    assert await locks.locked("fr")
