"""A small background load for ``make run`` (``omninode-lock serve --demo-load``), so the
dashboard has something to show: a few HTTP clients of this very service take
exclusive and shared locks, queue for busy ones, and now and then let a lease expire."""

from __future__ import annotations

import asyncio
import contextlib
import random

import httpx

LOCKS = ("orders:eu", "orders:us", "reports:daily", "billing:nightly", "cache:rebuild", "search:index")


async def _worker(http: httpx.AsyncClient, n: int, rng: random.Random) -> None:
    owner = f"demo-worker-{n}"
    while True:
        name = rng.choice(LOCKS)
        body = {
            "owner_id": owner,
            "mode": "shared" if name.startswith("reports") else "exclusive",
            "ttl": rng.choice((5, 10, 20)),
            "wait": rng.choice((0, 0, 2)),
            "metadata": {"demo": True, "worker": n},
        }
        with contextlib.suppress(httpx.HTTPError):
            resp = await http.post(f"/v1/locks/{name}/acquire", json=body)
            if resp.status_code == 200:
                lease = resp.json()
                await asyncio.sleep(rng.uniform(0.3, 3.0))
                if rng.random() < 0.93:  # the rest expire: the cleanup loop reaps them
                    await http.post(f"/v1/locks/{name}/release", json={"lease_id": lease["lease_id"]})
        await asyncio.sleep(rng.uniform(0.2, 1.0))


async def run_load(base_url: str, workers: int = 5, token: str | None = None) -> None:
    """Run until cancelled."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        rng = random.Random()
        await asyncio.gather(*(_worker(http, n, rng) for n in range(1, workers + 1)))
