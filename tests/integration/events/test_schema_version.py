"""A database whose lock schema is newer than this code: a clear SchemaVersionError, not a
DATABASE_ERROR retried forever. ``omninode-lock relay`` and ``serve`` exit non-zero with the
message; a service that meets it after start-up says it on /health."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.errors import LockDatabaseError, SchemaVersionError

pytestmark = pytest.mark.integration
FUTURE = 9999


@pytest.fixture
async def future_dsn(dsn: str) -> AsyncIterator[str]:
    """The test database with one migration this code does not know."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "INSERT INTO omninode_locks.schema_migrations (version, name, checksum) VALUES ($1, 'future', 'x')",
        FUTURE,
    )
    try:
        yield dsn
    finally:
        await conn.execute("DELETE FROM omninode_locks.schema_migrations WHERE version = $1", FUTURE)
        await conn.close()


def check_message(text: str) -> None:
    assert f"migration {FUTURE}" in text, text
    assert "knows migrations up to" in text and "upgrade omninode-bridge" in text, text


async def test_the_client_raises_a_schema_version_error(future_dsn: str, settings: LockSettings) -> None:
    with pytest.raises(SchemaVersionError) as caught:
        async with LockClient.connect(future_dsn, settings=settings, cleanup=False):
            pass
    err = caught.value
    assert isinstance(err, LockDatabaseError) and err.code == "DATABASE_ERROR"
    assert err.details["database_version"] == FUTURE and err.details["code_version"] < FUTURE
    check_message(err.message)


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMNINODE_POSTGRES_DSN": dsn, "OMNINODE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    code = "from omninode_bridge.scripts import omninode_lock; omninode_lock()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_relay_exits_with_the_message(future_dsn: str) -> None:
    done = cli(future_dsn, "relay")
    assert done.returncode != 0
    check_message(done.stderr)


def test_serve_exits_with_the_message(future_dsn: str) -> None:
    pytest.importorskip("uvicorn")
    done = cli(future_dsn, "serve", "--port", "0")
    assert done.returncode != 0, done.stderr[-2000:]
    check_message(done.stderr)


async def test_health_reports_it_when_met_after_start_up(future_dsn: str, settings: LockSettings) -> None:
    """The service starts before its database answers; when it connects and finds the
    schema newer, it stops trying and /health says why (503)."""
    pytest.importorskip("fastapi")
    from omninode_bridge.service.app import _connect, create_app

    cfg = settings.with_dsn(future_dsn)
    app = create_app(cfg)
    with pytest.raises(SchemaVersionError):
        await _connect(app, cfg)  # not retried: returns at once with the error
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        resp = await http.get("/health")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unhealthy"
    check_message(body["reason"])
