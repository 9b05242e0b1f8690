"""Helpers shared by the event tests of the service (test_events_*.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx


async def take_and_release(http: httpx.AsyncClient, name: str, owner: str = "w") -> str:
    """One acquire and one release through the API; returns the lease id."""
    resp = await http.post(f"/v1/locks/{name}/acquire", json={"owner_id": owner, "ttl": 30})
    assert resp.status_code == 200, resp.text
    lease_id: str = resp.json()["lease_id"]
    resp = await http.post(f"/v1/locks/{name}/release", json={"lease_id": lease_id})
    assert resp.status_code == 200, resp.text
    return lease_id


async def dashboard_snapshot(http: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    """The first snapshot the dashboard's stream sends."""
    async with http.stream("GET", "/dashboard/stream", headers=headers) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                snapshot: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return snapshot
    raise AssertionError("the dashboard stream ended without a snapshot")
