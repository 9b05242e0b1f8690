"""The workload's operations through the HTTP service (``omninode-lock serve``).

Errors come back as the engine's exception types (by ``error_code``) so the workload
handles both drivers alike; a transport failure or a 5xx is an outcome in doubt
(``LockDatabaseError``). The local deadline counts the TTL from before the request was
sent, so it errs early as the library's does.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from chaos.history import Held
from omninode_bridge.locks.errors import (
    LockDatabaseError,
    LockError,
    LockExpiredError,
    LockHeldByOtherError,
    LockNotHeldError,
    LockTimeoutError,
)

ERRORS: dict[str, type[LockError]] = {
    "LOCK_HELD_BY_OTHER": LockHeldByOtherError,
    "LOCK_TIMEOUT": LockTimeoutError,
    "LOCK_EXPIRED": LockExpiredError,
    "LOCK_NOT_HELD": LockNotHeldError,
}


class HttpDriver:
    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, connect=2.0))

    async def __aenter__(self) -> HttpDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def _post(self, path: str, body: dict[str, Any], wait: float = 0.0) -> dict[str, Any]:
        try:
            resp = await self.http.post(path, json=body, timeout=wait + 8.0)
        except httpx.HTTPError as err:
            raise LockDatabaseError(f"transport: {type(err).__name__}") from err
        data: dict[str, Any] = (
            resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        )
        if resp.status_code == 200:
            return data
        error = ERRORS.get(str(data.get("error_code")), LockDatabaseError)
        raise error(f"HTTP {resp.status_code}: {data.get('error_code')}")

    async def acquire(self, lock: str, owner: str, lease_id: str, **opts: Any) -> Held:
        body = {"owner_id": owner, "lease_id": lease_id, **{k: v for k, v in opts.items() if v is not None}}
        sent = time.monotonic()
        data = await self._post(f"/v1/locks/{lock}/acquire", body, float(opts.get("wait") or 0))
        ttl = float(data["ttl"])
        return Held(lock, data["mode"], data["lease_id"], int(data["token"]), ttl, sent + ttl,
                    data["acquired_at"], data["expires_at"])  # fmt: skip

    async def extend(self, held: Held, ttl: float) -> str:
        sent = time.monotonic()
        data = await self._post(f"/v1/locks/{held.lock}/extend", {"lease_id": held.lease_id, "ttl": ttl})
        held.deadline, held.ttl = sent + ttl, ttl
        return str(data["expires_at"])

    async def release(self, lock: str, lease_id: str) -> bool:
        data = await self._post(f"/v1/locks/{lock}/release", {"lease_id": lease_id})
        return not data.get("already_released", False)
