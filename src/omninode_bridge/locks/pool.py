"""Opening the engine's connection pool (and the embedded server when needed).

A failed connection says what failed, in one line, with the password hidden: host not
found, connection refused at host:port, authentication failed for user X, database Y
does not exist, timed out, or a malformed DSN (:class:`LockValidationError`).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
from typing import Any, NoReturn

import asyncpg

from omninode_bridge.core.dsn import DsnError, candidates, parse_dsn, redact_dsn, scrub, to_url
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.embedded import EmbeddedError, start_embedded
from omninode_bridge.locks.errors import LockDatabaseError, LockError, LockValidationError


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing: the engine's statements leave no session
    state behind (settings are transaction-local), so asyncpg's default reset query
    would only add a round trip to every call."""


def _decode_json(text: str) -> Any:
    """``json.loads``, without its call chain for the value nearly every lease row holds:
    empty metadata (a try-lock pair decodes two)."""
    return {} if text == "{}" else json.loads(text)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=_decode_json, schema="pg_catalog")


async def open_pool(cfg: LockSettings) -> tuple[asyncpg.Pool, str]:
    """A pool on the configured DSN, or on an embedded PostgreSQL when none is set.

    Returns the pool and the DSN for LISTEN connections beside it, in URL form (asyncpg
    does not read libpq's keyword form): ``listen_dsn`` when set (a direct connection
    when the pool goes through a transaction pooler), else the pool's own DSN. A
    multi-host DSN (``postgresql://h1:p1,h2:p2/db?target_session_attrs=read-write``)
    is handed to asyncpg as is, so every new connection finds the current primary.
    """
    if cfg.dsn is None:
        # the DSN may still come from the caller (connect(dsn) / --dsn), so this is checked
        # here, when it is known that there is none, not when the settings are read
        if cfg.listen_dsn is not None:
            raise LockValidationError(
                "listen_dsn is set but no dsn: it is a direct connection to the server dsn names",
                field="listen_dsn",
            )
        try:
            dsn = await asyncio.to_thread(start_embedded, cfg.data_dir, keep_running=True)
        except EmbeddedError as err:
            raise LockDatabaseError(str(err)) from err
        listen = dsn
    else:
        try:
            dsn = to_url(cfg.dsn)
            listen = to_url(cfg.listen_dsn) if cfg.listen_dsn is not None else dsn
        except DsnError as err:
            raise LockValidationError(str(err), field="dsn") from None
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=cfg.pool_min,
            max_size=cfg.pool_max,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=60,
            timeout=cfg.connect_timeout,
            # 0 behind PgBouncer in transaction mode: asyncpg then uses only the unnamed
            # statement, parsed and executed before the Sync that ends the transaction
            statement_cache_size=cfg.statement_cache_size,
        )
    except (OSError, ValueError, OverflowError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        # messages name the DSN as the user wrote it (keyword or URL form)
        raise_connect_error(err, cfg.dsn or dsn, cfg.connect_timeout)
    return pool, listen


def raise_connect_error(err: BaseException, dsn: str, timeout: float | None = None) -> NoReturn:
    """Raise :func:`connect_error` for ``err``, chained unless the cause quotes a secret."""
    mapped = connect_error(err, dsn, timeout)
    if any(secret in str(err) for secret in candidates(dsn)):
        raise mapped from None
    raise mapped from err


def connect_error(err: BaseException, dsn: str, timeout: float | None = None) -> LockError:
    """The engine error for a failed connection attempt on ``dsn``: what failed, no secret."""
    secrets = candidates(dsn)
    safe = redact_dsn(dsn)
    try:
        params = parse_dsn(dsn)
    except DsnError as bad:
        return LockValidationError(str(bad), field="dsn")
    where = _where(params)
    user = params.get("user") or os.environ.get("PGUSER") or _os_user()
    detail = scrub(_text(err), secrets)
    if isinstance(err, (ValueError, OverflowError, asyncpg.ClientConfigurationError)):
        return LockValidationError(f"invalid DSN {safe}: {detail}", field="dsn")
    message = _message(err, where, params, user, detail, timeout)
    attrs = params.get("target_session_attrs")
    if attrs and attrs != "any":  # hosts that answered but did not match were skipped
        message += f"; target_session_attrs={attrs} skips a host that answers without matching (a standby)"
    return LockDatabaseError(f"{message} (DSN {safe})", host=where)


def _message(
    err: BaseException, where: str, params: dict[str, str], user: str, detail: str, timeout: float | None
) -> str:
    if isinstance(err, TimeoutError):
        after = f" after {timeout:g} s" if timeout else ""
        return f"timed out{after} connecting to PostgreSQL at {where}"
    if isinstance(err, socket.gaierror):
        return f"host not found: {params.get('host', 'localhost')!r} does not resolve ({detail})"
    if isinstance(err, ConnectionRefusedError) or _refused(err):
        return f"connection refused by {where}: is PostgreSQL running and accepting connections there?"
    if isinstance(err, FileNotFoundError):
        return f"no PostgreSQL socket at {where}: is the server running?"
    if isinstance(err, asyncpg.InvalidPasswordError):
        return f"authentication failed for user {user!r} at {where} ({detail})"
    if isinstance(err, asyncpg.InvalidAuthorizationSpecificationError):
        return f"authentication failed for user {user!r} at {where}: {detail}"
    if isinstance(err, asyncpg.InvalidCatalogNameError):
        database = params.get("dbname") or user
        return f"database {database!r} does not exist at {where}"
    if isinstance(err, asyncpg.PostgresError):
        return f"PostgreSQL at {where} refused the connection: {detail} (SQLSTATE {err.sqlstate})"
    return f"cannot connect to PostgreSQL at {where}: {detail}"


def _where(params: dict[str, str]) -> str:
    """``host:port`` (or the socket folder) as the driver will try it; several for a
    multi-host DSN."""
    hosts = (params.get("host") or os.environ.get("PGHOST") or "localhost").split(",")
    ports = (params.get("port") or os.environ.get("PGPORT") or "5432").split(",")
    places: list[str] = []
    for i, host in enumerate(hosts):  # a multi-host DSN: each host with its port
        port = ports[i] if i < len(ports) else ports[-1]
        if host.startswith("/"):
            places.append(f"socket {host}/.s.PGSQL.{port}")
        else:
            places.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return ", ".join(places)


def _refused(err: BaseException) -> bool:
    """asyncpg reports several refused addresses (``localhost``: ::1 and 127.0.0.1) as one OSError."""
    return isinstance(err, OSError) and (err.errno == errno.ECONNREFUSED or "Connect call failed" in str(err))


def _text(err: BaseException) -> str:
    """The exception's own words on one line, else its class name."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _os_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        return "postgres"
