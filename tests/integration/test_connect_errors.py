"""``LockClient.connect`` against real servers: each failure says what failed, no password."""

from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import AsyncIterator

import asyncpg
import pytest
from psycopg.conninfo import make_conninfo

from omninode_bridge.core.dsn import build_url, parse_dsn
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.errors import LockDatabaseError, LockError, LockValidationError

pytestmark = pytest.mark.integration
SECRET = "Sekr1tPW"
SYSTEM = "postgresql://postgres@127.0.0.1:5432/postgres"


def _settings(**extra: float) -> LockSettings:
    return LockSettings(pool_min=1, pool_max=2, cleanup_interval=3600, **extra)  # type: ignore[arg-type]


async def _connect_error(dsn: str, settings: LockSettings | None = None) -> LockError:
    with pytest.raises(LockError) as caught:
        async with LockClient.connect(dsn, settings=settings or _settings(), cleanup=False):
            pass
    err = caught.value
    for text in (str(err), repr(err), err.message, str(err.details)):
        assert SECRET not in text, text
    assert "\n" not in str(err)
    return err


def _with(server_dsn: str, **params: str) -> str:
    return build_url({**parse_dsn(server_dsn), **params})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_database_that_does_not_exist(server_dsn: str) -> None:
    err = await _connect_error(_with(server_dsn, dbname="omninode_no_such_db", password=SECRET))
    assert isinstance(err, LockDatabaseError)
    assert "database 'omninode_no_such_db' does not exist at " in str(err)


async def test_user_that_does_not_exist(server_dsn: str) -> None:
    err = await _connect_error(_with(server_dsn, user="omninode_no_role", password=SECRET))
    assert isinstance(err, LockDatabaseError)
    assert "authentication failed for user 'omninode_no_role'" in str(err)


async def test_connection_refused_names_host_and_port() -> None:
    port = _closed_port()
    err = await _connect_error(f"postgresql://bob:{SECRET}@127.0.0.1:{port}/locks")
    assert isinstance(err, LockDatabaseError)
    assert f"connection refused by 127.0.0.1:{port}" in str(err)
    assert str(err).startswith("DATABASE_ERROR: ")


async def test_host_not_found() -> None:
    err = await _connect_error(f"host=nosuchhost.invalid user=bob password='{SECRET} x' dbname=locks")
    assert isinstance(err, LockDatabaseError)
    assert "host not found: 'nosuchhost.invalid'" in str(err)
    assert "password=***" in str(err)


async def test_invalid_port_is_a_validation_error() -> None:
    err = await _connect_error(f"postgresql://bob:{SECRET}@127.0.0.1:99999/locks")
    assert isinstance(err, LockValidationError)
    assert "port '99999' is not a number from 1 to 65535" in str(err)


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers (a black-holed PostgreSQL)."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_timeout_names_the_target(silent_port: int) -> None:
    started = asyncio.get_running_loop().time()
    err = await _connect_error(
        f"postgresql://bob:{SECRET}@127.0.0.1:{silent_port}/locks", _settings(connect_timeout=1.0)
    )
    assert isinstance(err, LockDatabaseError)
    assert f"timed out after 1 s connecting to PostgreSQL at 127.0.0.1:{silent_port}" in str(err)
    assert asyncio.get_running_loop().time() - started < 20


async def test_keyword_form_dsn_connects(server_dsn: str) -> None:
    """asyncpg reads only URLs; the engine accepts libpq's keyword form too."""
    keyword = make_conninfo(**parse_dsn(server_dsn))
    assert "://" not in keyword
    async with (
        LockClient.connect(keyword, settings=_settings(), run_migrations=False, cleanup=False) as locks,
        locks.pool.acquire() as conn,
    ):
        assert await conn.fetchval("SELECT 1") == 1


async def _system_server_answers() -> bool:
    try:
        conn = await asyncpg.connect(SYSTEM, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def test_system_server_database_that_does_not_exist() -> None:
    """The same messages on the machine's PostgreSQL over TCP (127.0.0.1:5432, trust)."""
    if not await _system_server_answers():
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432")
    err = await _connect_error(f"postgresql://postgres:{SECRET}@127.0.0.1:5432/omninode_no_such_db")
    assert "database 'omninode_no_such_db' does not exist at 127.0.0.1:5432" in str(err)
    err = await _connect_error(f"host=127.0.0.1 port=5432 user=omninode_no_role password={SECRET}")
    assert "authentication failed for user 'omninode_no_role' at 127.0.0.1:5432" in str(err)


# every DSN form, each pointing at a closed port; (template, password fragments)
FORMS = [
    ("postgresql://bob:Sekr1tPW@127.0.0.1:{port}/locks", ["Sekr1tPW"]),
    ("postgres://bob:Sekr1tPW@127.0.0.1:{port}/locks", ["Sekr1tPW"]),
    ("postgresql://bob@127.0.0.1:{port}/locks?password=Sekr1tPW", ["Sekr1tPW"]),
    ("host=127.0.0.1 port={port} user=bob password=Sekr1tPW", ["Sekr1tPW"]),
    ("host=127.0.0.1 port={port} user=bob password='Sekr1t PW9'", ["Sekr1t", "PW9"]),
    ("postgresql://:Sekr1tPW@127.0.0.1:{port}/locks", ["Sekr1tPW"]),
    ("postgresql://bob:Sekr1t@PW9@127.0.0.1:{port}/locks", ["Sekr1t", "PW9"]),
    ("postgresql://bob:Sekr%401tPW@127.0.0.1:{port}/locks", ["Sekr%401tPW", "Sekr@1tPW", "1tPW"]),
]


@pytest.mark.parametrize(("template", "fragments"), FORMS)
async def test_no_form_leaks_through_connect_errors_or_their_causes(
    template: str, fragments: list[str]
) -> None:
    dsn = template.format(port=_closed_port())
    with pytest.raises(LockError) as caught:
        await LockClient.connect(dsn, settings=_settings(), cleanup=False)
    shown = "".join(traceback.format_exception(caught.value))  # the whole chain, as a crash would print
    for fragment in fragments:
        assert fragment not in shown, f"{fragment!r} leaked:\n{shown}"
    assert "connection refused by 127.0.0.1" in str(caught.value) or "unencoded '@'" in str(caught.value)
