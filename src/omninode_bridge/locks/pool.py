"""Opening the engine's connection pool (and the embedded server when needed)."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.embedded import start_embedded
from omninode_bridge.locks.errors import LockDatabaseError, LockValidationError


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing: the engine's statements leave no session
    state behind (settings are transaction-local), so asyncpg's default reset query
    would only add a round trip to every call."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def open_pool(cfg: LockSettings) -> tuple[asyncpg.Pool, str]:
    """A pool on the configured DSN, or on an embedded PostgreSQL when none is set.

    Returns the pool and the DSN it uses (the listener opens its own connection).
    Errors name the DSN with its password hidden.
    """
    dsn = cfg.dsn if cfg.dsn is not None else await asyncio.to_thread(start_embedded, cfg.data_dir)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=cfg.pool_min,
            max_size=cfg.pool_max,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=60,
        )
    except ValueError as err:  # asyncpg's DSN parser: malformed port, options...
        raise LockValidationError(f"invalid DSN {cfg.safe_dsn()}", field="dsn") from err
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise LockDatabaseError(
            f"cannot connect to PostgreSQL at {cfg.safe_dsn()}: {type(err).__name__}"
        ) from err
    return pool, dsn
