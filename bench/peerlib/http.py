"""Our HTTP service: ``omninode-lock serve`` in a subprocess, called with httpx keep-alive clients."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from bench.peerlib.base import System, Unavailable, close_quietly, require
from bench.peerlib.omninode import OURS, TTL, WAIT
from bench.service import CLI, ServiceProcess

POOL = 8  # the service's database pool (OMNINODE_POOL_MAX)


class _HttpSession:
    def __init__(self, client: Any, owner: str) -> None:
        self.client, self.owner = client, owner

    async def _acquire(self, name: str, wait: float) -> dict[str, Any] | None:
        response = await self.client.post(
            f"/v1/locks/{name}/acquire", json={"owner_id": self.owner, "ttl": TTL, "wait": wait}
        )
        if response.status_code == 409:
            return None
        response.raise_for_status()
        lease: dict[str, Any] = response.json()
        return lease

    async def try_acquire(self, name: str) -> dict[str, Any] | None:
        return await self._acquire(name, 0)

    async def release(self, handle: dict[str, Any]) -> None:
        response = await self.client.post(
            f"/v1/locks/{handle['lock_name']}/release", json={"lease_id": handle["lease_id"]}
        )
        response.raise_for_status()

    async def acquire_wait(self, name: str) -> dict[str, Any]:
        lease = await self._acquire(name, WAIT)
        if lease is None:
            raise TimeoutError(name)
        return lease


class OmninodeHttp(System):
    key = json_key = "omninode_http"
    label = f"omninode HTTP service (serve, 1 worker, pool {POOL}; httpx)"
    facts = OURS
    note = "omninode-lock serve subprocess on a free port; one httpx.AsyncClient (1 keep-alive connection) per client"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.service: ServiceProcess | None = None
        self.clients: list[Any] = []

    async def start(self) -> None:
        require("httpx", "uvicorn", hint="pip install -e '.[service]'")
        if shutil.which(CLI) is None:
            raise Unavailable(f"{CLI} is not installed")
        self.service = await ServiceProcess(self.dsn, POOL).start()

    async def open(self, clients: int, contended: bool) -> Sequence[_HttpSession]:
        import httpx

        assert self.service is not None
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.service.port}",
                              limits=limits, timeout=WAIT + 30)
            for _ in range(clients)
        ]  # fmt: skip
        return [_HttpSession(c, f"peer-{i}") for i, c in enumerate(self.clients)]

    async def close(self) -> None:
        await close_quietly(*(c.aclose() for c in self.clients))
        self.clients = []

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None
