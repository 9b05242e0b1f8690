"""The engine through PgBouncer in transaction pooling mode (Debian's 1.18: no prepared
statements in that mode), with LISTEN on a direct connection (``listen_dsn``).

PgBouncer runs in front of the server under test (``server_dsn``); every test gets its
own database there (``dsn``) and reaches it through PgBouncer. Skipped, with the reason,
where the ``pgbouncer`` binary is absent (``.ci/run`` installs Debian's package).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest
from bench.topology import PgBouncer, find_pgbouncer

from omninode_bridge.locks import (
    LockClient,
    LockHeldByOtherError,
    LockSettings,
    LockValidationError,
    StaleTokenError,
    SyncLockClient,
)

SCHEMA = "omninode_locks"
POOL_SIZE = 4  # PgBouncer's server connections per database


@pytest.fixture(scope="module")
def bouncer(server_dsn: str) -> Iterator[PgBouncer]:
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it)")
    with PgBouncer(server_dsn, pool_size=POOL_SIZE) as running:
        yield running


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


@pytest.fixture
def routed(bouncer: PgBouncer, dsn: str) -> str:
    """This test's database, through PgBouncer."""
    return bouncer.dsn_for(database_of(dsn))


def pooled_settings(routed: str, direct: str, **changes: object) -> LockSettings:
    """Settings for PgBouncer in transaction mode: no named prepared statements, LISTEN direct."""
    base: dict[str, object] = {
        "dsn": routed,
        "listen_dsn": direct,
        "statement_cache_size": 0,
        "schema": SCHEMA,
        "pool_min": 1,
        "pool_max": 6,
        "recheck_interval": 30.0,  # a waiter must be woken by NOTIFY, not by the re-check
        "cleanup_interval": 3600,
    }
    return LockSettings(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
async def pooled(routed: str, dsn: str) -> AsyncIterator[LockClient]:
    async with LockClient.connect(settings=pooled_settings(routed, dsn), cleanup=False) as client:
        yield client


# -- the settings (no PgBouncer needed) ----------------------------------------------------


async def test_a_listen_dsn_without_any_dsn_is_refused_at_connect() -> None:
    """...and refused, without the secret, only when no DSN comes at all (an embedded
    server has no separate LISTEN address)."""
    from omninode_bridge.locks import LockClient

    settings = LockSettings.load({"OMNINODE_LISTEN_DSN": "postgresql://svc:direct-pw@db1/x"}, env_file=None)
    with pytest.raises(LockValidationError) as bad:
        await LockClient.connect(settings=settings)
    assert "listen_dsn is set but no dsn" in str(bad.value) and "direct-pw" not in str(bad.value)


def test_listen_dsn_is_a_secret_setting_read_from_the_environment() -> None:
    env = {
        "OMNINODE_POSTGRES_DSN": "postgresql://svc:pool-pw@bouncer:6432/locks",
        "OMNINODE_LISTEN_DSN": "postgresql://svc:direct-pw@db1:5432,db2:5432/locks?target_session_attrs=read-write",
        "OMNINODE_STATEMENT_CACHE_SIZE": "0",
    }
    s = LockSettings.load(env, env_file=None)
    assert s.statement_cache_size == 0
    assert s.listen_dsn == env["OMNINODE_LISTEN_DSN"]
    shown = repr(s)
    assert "direct-pw" not in shown and "pool-pw" not in shown
    assert "db1:5432,db2:5432" in shown  # both hosts, password hidden

    # the DSN may come from the caller (connect(dsn), --dsn): a listen DSN alone is read...
    alone = LockSettings.load({"OMNINODE_LISTEN_DSN": "postgresql://svc:direct-pw@db1/x"}, env_file=None)
    assert alone.with_dsn("postgresql://svc:pool-pw@bouncer:6432/x").listen_dsn == alone.listen_dsn
    with pytest.raises(LockValidationError) as bad:
        LockSettings.load(
            {**env, "OMNINODE_LISTEN_DSN": "postgresql://svc:direct-pw@db1:99999/x"}, env_file=None
        )
    assert "OMNINODE_LISTEN_DSN" in str(bad.value) and "direct-pw" not in str(bad.value)
    with pytest.raises(LockValidationError, match="statement_cache_size"):
        LockSettings.load({**env, "OMNINODE_STATEMENT_CACHE_SIZE": "-1"}, env_file=None)


# -- nothing relies on a session (a static check of every statement) -------------------------

SRC = Path(__file__).resolve().parents[2] / "src" / "omninode_bridge"
SESSION_SQL = {
    "session advisory lock": re.compile(r"\bpg_(try_)?advisory_lock(_shared)?\s*\(", re.I),
    # set_config(name, value, false): the third argument of that very call (not a later
    # ", false)" elsewhere in the statement)
    "session-wide set_config": re.compile(
        r"\bset_config\s*\(\s*'[^']*'\s*,\s*[^,()]*(\([^()]*\))?[^,()]*,\s*false\s*\)", re.I
    ),
    "SET SESSION": re.compile(r"\bSET\s+SESSION\b", re.I),
    "temporary table": re.compile(r"\bCREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\b", re.I),
    "LISTEN in SQL": re.compile(r"^\s*(UN)?LISTEN\b", re.I | re.M),
    "named prepared statement": re.compile(r"^\s*PREPARE\b", re.I | re.M),
}


def test_no_statement_relies_on_session_state() -> None:
    """Every SQL file the engine and relay send: through PgBouncer in transaction mode the
    next transaction may run on another server connection, so nothing may outlive one."""
    files = sorted(SRC.glob("*/sql/**/*.sql"))
    assert len(files) >= 3
    found = []
    for path in files:
        text = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))  # comments say these words
        found += [f"{path.name}: {what}" for what, pattern in SESSION_SQL.items() if pattern.search(text)]
    assert found == []
    # named statements from Python (asyncpg's prepare() always names one); LISTEN only on
    # the listen_dsn connections (the grant listener and the outbox wake-up)
    py = {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8") for p in SRC.rglob("*.py")}
    assert [n for n, text in py.items() if re.search(r"\.prepare\(", text)] == []
    assert sorted(n for n, text in py.items() if "add_listener(" in text) == [
        "events/wakeup.py",
        "locks/listener.py",
    ]


# -- the negative control: why the setting exists --------------------------------------------


async def test_named_prepared_statements_break_through_pgbouncer_and_the_setting_avoids_them(
    routed: str,
) -> None:
    """asyncpg's default cache names statements on one server connection; PgBouncer then
    runs the next transaction on another one. With the cache at 0 the same sequence works."""

    async def sequence(cache: int) -> None:
        a = await asyncpg.connect(routed, statement_cache_size=cache)
        b = await asyncpg.connect(routed, statement_cache_size=cache)
        try:
            await a.fetchval("SELECT $1::int", 1)  # prepared on server connection S
            async with b.transaction():  # b now holds S (the idle one PgBouncer reuses first)
                await b.fetchval("SELECT 1")
                await a.fetchval("SELECT $1::int", 2)  # a runs on another server connection
        finally:
            a.terminate()
            b.terminate()

    with pytest.raises(asyncpg.InvalidSQLStatementNameError):
        await sequence(100)
    await sequence(0)


# -- the engine's semantics through PgBouncer --------------------------------------------


async def test_try_lock_extend_release_through_pgbouncer(
    pooled: LockClient, bouncer: PgBouncer, dsn: str
) -> None:
    lease = await pooled.acquire("job", "a", ttl=5)
    with pytest.raises(LockHeldByOtherError):
        await pooled.acquire("job", "b", ttl=5)
    assert await pooled.acquire("job", "b", ttl=5, blocking=False) is None
    before = lease.expires_at
    await pooled.extend(lease, ttl=60)
    assert lease.expires_at > before
    info = await pooled.get_lock_info("job")
    assert [(h.owner_id, h.token) for h in info.holders] == [("a", lease.token)]
    assert await pooled.owned(lease) and await pooled.locked("job")
    assert await pooled.release(lease) is True
    assert await pooled.release(lease) is False  # idempotent
    again = await pooled.acquire("job", "b", ttl=5)
    assert again.token > lease.token
    assert f"db={database_of(dsn)}" in bouncer.log(), "the pool really went through PgBouncer"


async def test_blocking_acquire_is_woken_by_release_over_the_direct_listener(
    pooled: LockClient, admin_conn: asyncpg.Connection
) -> None:
    held = await pooled.acquire("q", "a", ttl=30)
    waiter = asyncio.create_task(pooled.acquire("q", "b", ttl=30, wait=10))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    # the waiter's listening backend is a direct session that really LISTENs
    listening = await admin_conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND datname = current_database()",
        pooled.listener.pid,
    )
    assert listening == 1
    released = time.monotonic()
    await pooled.release(held)
    granted = await asyncio.wait_for(waiter, 5)
    latency = time.monotonic() - released
    assert granted.owner_id == "b" and granted.token > held.token
    assert pooled.listener.notifications >= 1
    assert latency < 2.0, f"woken after {latency:.2f} s: by the re-check, not by NOTIFY"


async def test_a_listener_behind_the_pooler_is_named_in_a_warning(
    routed: str, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without listen_dsn the LISTEN connection goes through PgBouncer too, where it has
    no session of its own: the engine says so, naming the setting."""
    settings = pooled_settings(routed, dsn).replace(listen_dsn=None)
    with caplog.at_level("WARNING", logger="omninode_bridge"):
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            await locks.listener.ensure_started()
    warned = [
        r.getMessage() for r in caplog.records if "LISTEN connection goes through a proxy" in r.getMessage()
    ]
    assert len(warned) == 1 and "OMNINODE_LISTEN_DSN" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="omninode_bridge"):
        async with LockClient.connect(settings=pooled_settings(routed, dsn), cleanup=False) as locks:
            await locks.listener.ensure_started()
    assert not [r for r in caplog.records if "proxy" in r.getMessage()]


async def test_semaphore_through_pgbouncer(pooled: LockClient) -> None:
    held = [await pooled.acquire("gpu", f"o{i}", permits=3, ttl=30) for i in range(3)]
    assert await pooled.acquire("gpu", "o4", permits=3, ttl=30, blocking=False) is None
    waiter = asyncio.create_task(pooled.acquire("gpu", "o4", permits=3, ttl=30, wait=10))
    await asyncio.sleep(0.2)
    await pooled.release(held[1])
    fourth = await asyncio.wait_for(waiter, 5)
    info = await pooled.get_lock_info("gpu")
    assert info.permits == 3
    assert sorted(h.owner_id for h in info.holders) == ["o0", "o2", "o4"]
    assert fourth.token > max(h.token for h in held)


async def test_acquire_inside_the_callers_transaction_through_pgbouncer(pooled: LockClient) -> None:
    async with pooled.pool.acquire() as conn:
        await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, token bigint NOT NULL)")
        async with conn.transaction():
            lease = await pooled.acquire("tx", "a", ttl=30, conn=conn)
            await pooled.fence_guard(conn, "orders", lease.token)
            await conn.execute("INSERT INTO orders VALUES (1, $1)", lease.token)
        assert await pooled.owned(lease)  # committed with the caller's transaction
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                doomed = await pooled.acquire("tx2", "a", ttl=30, conn=conn)
                raise RuntimeError("roll back")
        assert not await pooled.locked("tx2") and not await pooled.owned(doomed)
        with pytest.raises(StaleTokenError):
            async with conn.transaction():
                await pooled.fence_guard(conn, "orders", lease.token - 1)
        assert await conn.fetchval("SELECT token FROM orders WHERE id = 1") == lease.token


def test_sync_client_through_pgbouncer(routed: str, dsn: str) -> None:
    # the caller's own psycopg connection must not prepare statements either
    with (
        SyncLockClient.connect(settings=pooled_settings(routed, dsn), cleanup=False) as locks,
        psycopg.connect(routed, prepare_threshold=None, autocommit=False) as conn,
    ):
        lease = locks.acquire("s", "a", ttl=30)
        with pytest.raises(LockHeldByOtherError):
            locks.acquire("s", "b", ttl=30)
        locks.extend(lease, ttl=60)
        assert locks.release(lease) is True
        for i in range(8):  # past psycopg's default prepare threshold (5)
            with conn.transaction():
                inside = locks.acquire(f"tx{i}", "a", ttl=30, conn=conn)
                locks.fence_guard(conn, f"res{i}", inside.token)
            assert locks.release(inside) is True


async def test_racing_clients_through_pgbouncer_never_overlap(
    routed: str, dsn: str, admin_conn: asyncpg.Connection, check_counters: object
) -> None:
    """Eight clients (each its own pool) race on one lock through PgBouncer's four server
    connections; every protected write goes through the fencing guard."""
    clients = [
        await LockClient.connect(settings=pooled_settings(routed, dsn, pool_max=4), cleanup=False)
        for _ in range(8)
    ]
    await admin_conn.execute("CREATE TABLE guarded (seq bigserial PRIMARY KEY, token bigint, worker int)")
    intervals: list[tuple[float, float, int]] = []
    stale = 0
    stop = time.monotonic() + 3.0

    async def worker(n: int, locks: LockClient) -> None:
        nonlocal stale
        while time.monotonic() < stop:
            lease = await locks.acquire("hot", f"w{n}", ttl=10, wait=10)
            start = time.monotonic()
            try:
                async with locks.pool.acquire() as conn, conn.transaction():
                    await locks.fence_guard(conn, "guarded", lease.token)
                    await conn.execute("INSERT INTO guarded (token, worker) VALUES ($1, $2)", lease.token, n)
            except StaleTokenError:
                stale += 1
            end = time.monotonic()
            await locks.release(lease)
            intervals.append((start, end, lease.token))

    try:
        during = asyncio.gather(*(worker(n, c) for n, c in enumerate(clients)))
        await asyncio.sleep(1.0)
        backends = await admin_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await during
    finally:
        for c in clients:
            await c.close()
    assert len(intervals) >= 20, f"only {len(intervals)} protected writes in 3 s"
    ordered = sorted(intervals)
    overlaps = [(a, b) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]
    assert overlaps == [], "two holders of one exclusive lock inside the protected section"
    assert [t for *_, t in ordered] == sorted(t for *_, t in ordered), "tokens out of grant order"
    assert stale == 0
    rows = await admin_conn.fetch("SELECT token FROM guarded ORDER BY seq")
    assert [r["token"] for r in rows] == [t for *_, t in ordered]
    # 8 pools of up to 4 connections, but PgBouncer's 4 server connections plus the one
    # shared direct LISTEN connection of this event loop
    assert backends <= POOL_SIZE + 1, f"{backends} server connections: not pooled by PgBouncer"
    await check_counters(dsn)  # type: ignore[operator]


async def test_correlation_ids_stay_in_their_transaction_through_pgbouncer(
    pooled: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """The id is transaction-local: a server connection PgBouncer hands to the next call
    (or another client) carries nothing over."""
    lease = await pooled.acquire("corr", ttl=30, correlation_id="req-1")
    await pooled.release(lease)
    plain = await pooled.acquire("corr", ttl=30)
    await pooled.release(plain, correlation_id="req-2")
    rows = await admin_conn.fetch(
        "SELECT event_type, correlation_id FROM omninode_locks.events WHERE lock_name = 'corr' ORDER BY id"
    )
    assert [(r["event_type"], r["correlation_id"]) for r in rows] == [
        ("lock_acquired", "req-1"),
        ("lock_released", None),
        ("lock_acquired", None),
        ("lock_released", "req-2"),
    ]
