"""Fixtures of the security tests: a migrated database per module and a DEBUG service on it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# the service helpers of the acceptance tests (svc_helpers)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "acceptance" / "service"))
from sec_helpers import SecureService
from svc_helpers import module_database


@pytest.fixture(scope="module")
async def sec_dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    async with module_database(server_dsn, template_db, "omninode_sec") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def secure(sec_dsn: str) -> AsyncIterator[SecureService]:
    svc = await SecureService(sec_dsn).start()
    yield svc
    await svc.stop()
    svc.remove_log()
