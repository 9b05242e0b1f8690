"""Versioned migrations: concurrent starters, equivalence, tamper detection."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from omninode_bridge.locks import LockClient, LockDatabaseError, LockSettings
from omninode_bridge.locks.migrate import migrate
from omninode_bridge.locks.queries import load_migrations, load_queries

FINGERPRINT = """
SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(replace(column_default, $1 || '.', 'S.'), '')
  FROM information_schema.columns WHERE table_schema = $1
UNION ALL
SELECT 'idx ' || replace(indexdef, $1 || '.', 'S.') FROM pg_indexes WHERE schemaname = $1
UNION ALL
SELECT 'con ' || conrelid::regclass::text || ' ' || pg_get_constraintdef(c.oid)
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = $1
UNION ALL
SELECT 'fn ' || p.proname || ' ' || md5(replace(replace(pg_get_functiondef(p.oid), '"' || $1 || '"', 'S'), $1, 'S'))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
ORDER BY 1
"""


async def fingerprint(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(FINGERPRINT, schema)
    return [r[0].replace(f'"{schema}"', "S").replace(f"{schema}.", "S.") for r in rows]


async def test_concurrent_starters_apply_migrations_once(dsn: str) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(6)]
    results = await asyncio.gather(*(migrate(c, "race_schema") for c in conns))
    assert sorted(results) == [[], [], [], [], [], [m.version for m in load_migrations("race_schema")]]
    rows = await conns[0].fetch("SELECT version FROM race_schema.schema_migrations")
    assert len(rows) == len(load_migrations("race_schema"))
    for c in conns:
        await c.close()


async def test_concurrent_clients_start_on_an_empty_database(dsn: str) -> None:
    settings = LockSettings(schema="fresh_start", pool_min=1, pool_max=2)
    clients = await asyncio.gather(
        *(LockClient.connect(dsn, settings=settings, cleanup=False) for _ in range(4))
    )
    lease = await clients[0].acquire("x", "a", ttl=30)
    assert lease.token == 1
    for c in clients:
        await c.close()


async def test_stepwise_upgrade_equals_fresh_install(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await migrate(conn, "fresh")
    # apply each migration in its own transaction, using the schema in between
    step = "stepwise"
    await conn.execute(f'CREATE SCHEMA "{step}"')
    await conn.execute(load_queries(step)["migrations_table"])
    for migration in load_migrations(step):
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                load_queries(step)["record_migration"], migration.version, migration.name, migration.checksum
            )
        if migration.version == 1:
            await conn.execute(
                "SELECT * FROM stepwise.acquire('data', gen_random_uuid(), 'o', 'exclusive', 30000, 0, NULL, false, '{}', NULL)"
            )
    assert await migrate(conn, step) == []
    fresh, stepwise = await fingerprint(conn, "fresh"), await fingerprint(conn, step)
    assert len(fresh) > 30
    assert fresh == stepwise
    # the per-test template database was built the same way
    assert await fingerprint(conn, "omninode_locks") == fresh
    await conn.close()


async def test_edited_or_unknown_migrations_are_refused(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("UPDATE omninode_locks.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(LockDatabaseError, match="changed after it was applied"):
        await migrate(conn, "omninode_locks")
    await conn.execute(
        "INSERT INTO omninode_locks.schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
    )
    with pytest.raises(LockDatabaseError, match="does not know"):
        await migrate(conn, "omninode_locks")
    await conn.close()


async def test_creating_the_schema_is_logged_once(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = LockSettings(schema="logged_once", pool_min=1, pool_max=2)
    with caplog.at_level("INFO", logger="omninode_bridge"):
        for _ in range(2):
            async with LockClient.connect(dsn, settings=settings, cleanup=False):
                pass
    created = [r for r in caplog.records if "created lock schema logged_once" in r.getMessage()]
    assert len(created) == 1
    assert "leases" in created[0].getMessage() and "waiters" in created[0].getMessage()
