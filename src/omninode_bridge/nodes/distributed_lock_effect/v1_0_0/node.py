"""NodeDistributedLockEffect: the lock engine as an ONEX effect node.

Every operation is one call into :class:`~omninode_bridge.locks.LockClient` on a real
PostgreSQL; this module only translates requests and responses (no lock logic here).
Callers of the original node keep working: its operation names, request/response
fields and config keys are accepted (see ``models/``). Lock errors come back as a
response with ``success=False`` and the SPEC's ``error_code``, not as exceptions.

``python -m omninode_bridge.nodes.distributed_lock_effect.v1_0_0.node`` serves the
HTTP service (SPEC §4).
"""

# omninode-check: hand-written

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from omninode_bridge.core import EnumCoreErrorCode, ModelONEXContainer, ModelOnexError, NodeEffect
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.errors import LockError, LockHeldByOtherError, LockNotHeldError
from omninode_bridge.locks.models import Lease, LockInfo
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models import (
    EnumLockOperation,
    EnumLockStatus,
    ModelDistributedLockConfig,
    ModelDistributedLockRequest,
    ModelDistributedLockResponse,
    ModelLockInfo,
    ModelPerformanceMetrics,
)

Op = EnumLockOperation
Handler = Callable[[ModelDistributedLockRequest, ModelDistributedLockResponse], Awaitable[None]]


def _holder(lease: Lease) -> dict[str, Any]:
    return {
        "owner_id": lease.owner_id,
        "mode": lease.mode.value,
        "token": lease.token,
        "acquired_at": lease.acquired_at.isoformat(),
        "expires_at": lease.expires_at.isoformat(),
        "hold_count": lease.hold_count,
    }


def lock_info_of(info: LockInfo, owner_id: str | None = None) -> ModelLockInfo:
    """The original node's view of ``info`` (the caller's own lease first, if it holds one)."""
    mine = next((h for h in info.holders if h.owner_id == owner_id), None)
    first = mine or (info.holders[0] if info.holders else None)
    return ModelLockInfo(
        lock_name=info.name,
        status=EnumLockStatus.ACQUIRED if info.held else EnumLockStatus.AVAILABLE,
        owner_id=first.owner_id if first else None,
        mode=first.mode.value if first else None,
        token=first.token if first else None,
        acquired_at=first.acquired_at if first else None,
        expires_at=first.expires_at if first else None,
        lease_duration=first.ttl if first else None,
        hold_count=first.hold_count if first else 0,
        permits=info.permits,
        last_token=info.last_token,
        holders=[_holder(h) for h in info.holders],
        waiters=[
            {"owner_id": w.owner_id, "mode": w.mode.value, "position": w.position} for w in info.waiters
        ],
        metadata=first.metadata if first else {},
    )


def lease_info(lease: Lease, status: EnumLockStatus = EnumLockStatus.ACQUIRED) -> ModelLockInfo:
    return ModelLockInfo(
        lock_name=lease.lock_name,
        status=status,
        owner_id=lease.owner_id,
        mode=lease.mode.value,
        token=lease.token,
        acquired_at=lease.acquired_at,
        expires_at=lease.expires_at,
        lease_duration=lease.ttl,
        hold_count=lease.hold_count,
        holders=[_holder(lease)],
        metadata=lease.metadata,
    )


class NodeDistributedLockEffect(NodeEffect):
    """Distributed locks on PostgreSQL as an ONEX effect node (see the module docstring).

    The container may provide a ready ``lock_client`` (a :class:`LockClient`, not closed
    by the node); otherwise the node opens one from the container's config.
    """

    def __init__(self, container: ModelONEXContainer) -> None:
        super().__init__(container)
        try:
            self.config = ModelDistributedLockConfig.model_validate(container.config)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(map(str, first["loc"]))
            raise ModelOnexError(
                f"invalid NodeDistributedLockEffect configuration: {key}: {first['msg']}",
                EnumCoreErrorCode.INVALID_CONFIGURATION,
                field=key,
            ) from err
        self.locks: LockClient | None = None
        self._owns_client = False
        # leases granted through this node, so release/extend by (lock_name, owner_id) works
        # for callers of the original node, which had no lease ids
        self._granted: dict[tuple[str, str], str] = {}
        self._by_operation: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._handlers: dict[Op, Handler] = {
            Op.ACQUIRE_LOCK: self._handle_acquire_lock,
            Op.RELEASE_LOCK: self._handle_release_lock,
            Op.EXTEND_LOCK: self._handle_extend_lock,
            Op.GET_LOCK_INFO: self._handle_get_lock_info,
            Op.LIST_LOCKS: self._handle_list_locks,
            Op.CLEANUP_EXPIRED: self._handle_cleanup_expired,
            Op.FORCE_RELEASE: self._handle_force_release,
        }

    # -- life cycle ---------------------------------------------------------------

    async def initialize(self) -> None:
        if self.container.has("lock_client"):
            self.locks = self.container.get("lock_client", LockClient)
        else:
            try:
                self.locks = await LockClient.connect(settings=self.config.settings())
            except LockError as err:
                raise ModelOnexError(
                    f"NodeDistributedLockEffect cannot start: {err.message}",
                    EnumCoreErrorCode.INITIALIZATION_FAILED,
                    lock_error=err.code,
                ) from err
            self._owns_client = True
        await super().initialize()

    async def cleanup(self) -> None:
        if self.locks is not None and self._owns_client:
            await self.locks.close()
        self.locks = None
        self._owns_client = False
        await super().cleanup()

    async def health(self) -> dict[str, Any]:
        report = await super().health()
        if self.locks is None:
            return report
        try:
            counts = await asyncio.wait_for(self.locks.counts(), 3)
        except (LockError, OSError, TimeoutError) as err:
            report.update(
                status="unhealthy", postgres="unreachable", reason=getattr(err, "code", type(err).__name__)
            )
        else:
            report.update(postgres="connected", locks=counts["active_locks"], waiters=counts["waiters"])
        return report

    async def metrics(self) -> dict[str, Any]:
        report = await super().metrics()
        report["operations"] = dict(self._by_operation)
        report["errors"] = dict(self._errors)
        if self.locks is not None:
            stats = self.locks.stats
            report["engine"] = {
                "acquires": dict(stats.acquires),
                "releases": stats.releases,
                "extends": stats.extends,
                "deadlocks": stats.deadlocks,
                "retries": stats.retries,
                "waiting": stats.waiting,
                "pool_size": self.locks.pool.get_size(),
                "pool_idle": self.locks.pool.get_idle_size(),
            }
        return report

    # -- entry point --------------------------------------------------------------

    async def execute_effect(
        self, request: ModelDistributedLockRequest | dict[str, Any]
    ) -> ModelDistributedLockResponse:
        """Run one operation. Lock errors are returned (``success=False``, ``error_code``)."""
        if isinstance(request, dict):
            raw = request
            try:
                request = ModelDistributedLockRequest.model_validate(raw)
            except ValidationError as err:
                return self._invalid(raw, err)
        started = time.perf_counter()
        op = request.operation.canonical
        response = ModelDistributedLockResponse(
            success=False,
            operation=request.operation,
            operation_type=op,
            correlation_id=request.correlation_id,
            execution_id=request.execution_id,
        )
        self._by_operation[op.value] = self._by_operation.get(op.value, 0) + 1
        retries_before = self._client().stats.retries
        try:
            await self._handlers[op](request, response)
            response.success = True
        except LockError as err:
            self._fail(response, err)
        elapsed = (time.perf_counter() - started) * 1000
        db_ms = self._client().stats.last_db_ms
        response.duration_ms = round(elapsed, 3)
        response.database_query_ms = round(db_ms, 3)
        response.performance_metrics = ModelPerformanceMetrics(
            execution_time_ms=round(elapsed, 3),
            database_time_ms=round(db_ms, 3),
            retry_count=self._client().stats.retries - retries_before + max(response.acquire_attempts - 1, 0),
        )
        return response

    def _client(self) -> LockClient:
        if self.locks is None:
            raise ModelOnexError(
                "NodeDistributedLockEffect is not initialized", EnumCoreErrorCode.INVALID_STATE
            )
        return self.locks

    def _fail(self, response: ModelDistributedLockResponse, err: LockError) -> None:
        response.success = False
        response.error_code = err.code
        response.error_message = err.message
        self._errors[err.code] = self._errors.get(err.code, 0) + 1
        retry_ms = err.details.get("retry_after_ms")
        if isinstance(retry_ms, int):
            response.retry_after_seconds = retry_ms / 1000

    def _invalid(self, raw: dict[str, Any], err: ValidationError) -> ModelDistributedLockResponse:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "request"
        try:
            operation = EnumLockOperation(raw.get("operation") or raw.get("operation_type"))
        except ValueError:
            operation = EnumLockOperation.GET_LOCK_INFO
        self._errors["VALIDATION_ERROR"] = self._errors.get("VALIDATION_ERROR", 0) + 1
        ids = {k: str(raw[k]) for k in ("correlation_id", "execution_id") if raw.get(k) is not None}
        return ModelDistributedLockResponse(
            success=False,
            operation=operation,
            operation_type=operation.canonical,
            error_code="VALIDATION_ERROR",
            error_message=f"{where}: {first['msg']}",
            **ids,
        )

    # -- operations (one engine call each) ----------------------------------------

    async def _handle_acquire_lock(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        locks = self._client()
        name = req.lock_name or ""
        owner = req.owner_id or locks.owner_id
        attempts = req.max_acquire_attempts or self.config.max_acquire_attempts
        delay = (
            self.config.acquire_retry_delay if req.acquire_retry_delay is None else req.acquire_retry_delay
        )
        lease_id = req.lease_id or str(uuid.uuid4())  # one id for every attempt: retries are idempotent
        for attempt in range(1, attempts + 1):
            res.acquire_attempts = attempt
            try:
                lease = await locks.acquire(
                    name,
                    owner,
                    mode=req.mode,
                    ttl=req.lease_duration,
                    wait=req.wait,
                    permits=req.permits,
                    reentrant=req.reentrant,
                    metadata=req.lease_metadata(),
                    lease_id=lease_id,
                )
                break
            except LockHeldByOtherError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay)
        self._granted[(name, owner)] = lease.lease_id
        res.lock_acquired = True
        res.lease_id = lease.lease_id
        res.token = lease.token
        res.lock_info = lease_info(lease)
        if req.token is not None and req.token != lease.token:
            res.warnings.append(f"token {req.token} was given; the lease's fencing token is {lease.token}")

    async def _lease_of(self, req: ModelDistributedLockRequest) -> str:
        """The lease a release/extend means: ``lease_id``, else the one this node granted to
        (lock_name, owner_id), else the owner's live lease in the database."""
        if req.lease_id:
            return req.lease_id
        name, owner = req.lock_name or "", req.owner_id or self._client().owner_id
        known = self._granted.get((name, owner))
        if known is not None:
            return known
        info = await self._client().get_lock_info(name)
        for holder in info.holders:
            if holder.owner_id == owner:
                return holder.lease_id
        raise LockNotHeldError(f"{owner!r} holds no lease on {name!r}", lock_name=name, owner_id=owner)

    async def _handle_release_lock(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        lease_id = await self._lease_of(req)
        released_now = await self._client().release(lease_id)
        self._forget(lease_id)
        res.lock_released = True
        if not released_now:
            res.warnings.append("the lease was already released")
        res.lock_info = ModelLockInfo(lock_name=req.lock_name or "", status=EnumLockStatus.RELEASED)

    async def _handle_extend_lock(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        lease_id = await self._lease_of(req)
        try:
            lease = await self._client().extend_lease_id(
                lease_id, req.extension_duration or req.lease_duration
            )
        except LockError:
            self._forget(lease_id)
            raise
        res.lock_extended = True
        res.token = lease.token
        res.lock_info = lease_info(lease)

    async def _handle_get_lock_info(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        res.lock_info = lock_info_of(await self._client().get_lock_info(req.lock_name or ""), req.owner_id)

    async def _handle_list_locks(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        rows = await self._client().list_locks(prefix=req.prefix, owner_id=req.owner_id, limit=req.limit)
        res.locks = [
            {
                "lock_name": r.name,
                "mode": "exclusive" if r.exclusive else "shared",
                "holders": r.holders,
                "owners": r.owners,
                "waiters": r.waiters,
                "permits": r.permits,
                "last_token": r.last_token,
                "next_expiry": r.next_expiry.isoformat() if r.next_expiry else None,
            }
            for r in rows
        ]

    async def _handle_cleanup_expired(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        locks = self._client()
        newest = await locks.recent_events(None, 1)
        since = int(newest[0]["id"]) if newest else 0
        res.cleaned_count = await locks.cleanup_expired()
        if res.cleaned_count:
            events = await locks.recent_events(None, min(1000, res.cleaned_count + 100))
            names = {e["lock_name"] for e in events if e["event_type"] == "lock_expired" and e["id"] > since}
            res.cleaned_lock_names = sorted(names)
        if req.max_age_seconds is not None:
            res.warnings.append(
                "max_age_seconds is not used: a lease expires by its own TTL (database clock)"
            )

    async def _handle_force_release(
        self, req: ModelDistributedLockRequest, res: ModelDistributedLockResponse
    ) -> None:
        name = req.lock_name or ""
        res.cleaned_count = await self._client().force_release(
            name, req.reason or "force_release via the node"
        )
        res.lock_released = res.cleaned_count > 0
        for key in [k for k in self._granted if k[0] == name]:
            del self._granted[key]

    def _forget(self, lease_id: str) -> None:
        for key in [k for k, v in self._granted.items() if v == lease_id]:
            del self._granted[key]


def main(argv: list[str] | None = None) -> None:
    """Serve the HTTP lock service (``--host``, ``--port``, ``--workers``)."""
    import argparse

    from omninode_bridge.locks.config import LockSettings
    from omninode_bridge.service.server import DEFAULT_HOST, DEFAULT_PORT, serve

    parser = argparse.ArgumentParser(
        prog="python -m omninode_bridge.nodes.distributed_lock_effect.v1_0_0.node"
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--insecure-no-auth", action="store_true")
    args = parser.parse_args(argv)
    try:
        serve(
            LockSettings.load(),
            args.host,
            args.port,
            workers=args.workers,
            allow_public_without_auth=args.insecure_no_auth,
        )
    except LockError as err:
        parser.exit(2, f"error: {err.code}: {err.message}\n")


if __name__ == "__main__":
    main()
