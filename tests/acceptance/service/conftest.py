"""Fixtures for the service tests: a migrated database per module and a service on it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import Service, module_database

# the cuttable TCP proxy of the integration tests (a fake PostgreSQL outage)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))


@pytest.fixture(scope="module")
async def module_dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    async with module_database(server_dsn, template_db, "omninode_svc") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def service(module_dsn: str) -> AsyncIterator[Service]:
    svc = await Service(module_dsn).start()
    yield svc
    await svc.stop()


@pytest.fixture
async def http(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        yield client
