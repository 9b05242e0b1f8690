"""Versioned migrations, applied under an advisory lock so concurrent starters never race."""

from __future__ import annotations

import asyncpg

from omninode_bridge import __version__
from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.errors import LockDatabaseError, SchemaVersionError
from omninode_bridge.locks.queries import check_schema, load_migrations, load_queries

TABLES = ("locks", "leases", "waiters", "events", "fences", "schema_migrations")


async def migrate(conn: asyncpg.Connection, schema: str) -> list[int]:
    """Apply pending migrations to ``schema``; return the versions applied now.

    Refuses to run when an applied migration's checksum differs from the file (someone
    edited a released migration) or the database is ahead of this code.
    """
    check_schema(schema)
    q = load_queries(schema)
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute(q["migration_lock"], schema)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(q["migrations_table"])
        done = {r["version"]: r for r in await conn.fetch(q["applied_migrations"])}
        known = {m.version for m in load_migrations(schema)}
        if ahead := sorted(set(done) - known):
            raise SchemaVersionError(
                f"schema {schema} is at migration {max(done)} but omninode-bridge {__version__} knows "
                f"migrations up to {max(known)} (the database has {ahead}, which this version does not know): "
                "upgrade omninode-bridge here to the version that migrated it, or use another schema",
                schema=schema,
                database_version=max(done),
                code_version=max(known),
            )
        for migration in load_migrations(schema):
            row = done.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise LockDatabaseError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was applied",
                        schema=schema,
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(q["record_migration"], migration.version, migration.name, migration.checksum)
            applied_now.append(migration.version)
    if applied_now:
        created = 1 in applied_now
        message = (
            f"created lock schema {schema} (tables {', '.join(TABLES)}) in this database"
            if created
            else f"upgraded lock schema {schema}"
        )
        emit_log_event(LogLevel.INFO, message, {"schema": schema, "versions": applied_now})
    return applied_now
