"""Fixtures of the security tests: a migrated database per module and a DEBUG service on it."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

# the service helpers of the acceptance tests (svc_helpers)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "acceptance" / "service"))
from sec_helpers import SecureService
from svc_helpers import drop_database, with_database

_counter = itertools.count()


@pytest.fixture(scope="module")
async def sec_dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    name = f"omninode_sec_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield with_database(server_dsn, name)
    finally:
        await drop_database(admin, name)
        await admin.close()


@pytest.fixture(scope="module")
async def secure(sec_dsn: str) -> AsyncIterator[SecureService]:
    svc = await SecureService(sec_dsn).start()
    yield svc
    await svc.stop()
    svc.remove_log()
