"""Auto-renewal: a heartbeat that extends a lease about every TTL/3.

If renewal fails for good (the lease expired or was taken over) or cannot succeed
before the lease would run out, the holder is told at once: ``lease.lost`` is set,
the ``on_lost`` callback runs, and the task holding the lock is cancelled (the
``async with`` block then raises ``LockExpiredError``). Never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.errors import LockError, LockExpiredError
from omninode_bridge.locks.models import Lease

Extend = Callable[[Lease], Awaitable[Lease]]


class LeaseKeeper:
    """Keeps one lease alive until stopped."""

    def __init__(
        self,
        extend: Extend,
        lease: Lease,
        *,
        on_lost: Callable[[Lease, str], None] | None = None,
        cancel: asyncio.Task[object] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._extend = extend
        self.lease = lease
        self._on_lost = on_lost
        self._cancel = cancel
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._sleep(self.lease.ttl / 3)
            reason = await self._renew_once()
            if reason is not None:
                self._lose(reason)
                return

    async def _renew_once(self) -> str | None:
        """Extend, retrying transient failures while the lease still has time left."""
        while True:
            try:
                await self._extend(self.lease)
                self.renewals += 1
                return None
            except LockError as err:
                if err.code in ("LOCK_EXPIRED", "LOCK_NOT_HELD"):
                    return err.code
                if self.lease.remaining() <= 0:
                    return f"renewal failed until expiry ({err.code})"
            except Exception as err:
                if self.lease.remaining() <= 0:
                    return f"renewal failed until expiry ({type(err).__name__})"
            await self._sleep(min(0.2, max(self.lease.remaining() / 4, 0.01)))

    def _lose(self, reason: str) -> None:
        self.lease.lost = reason
        emit_log_event(
            LogLevel.ERROR,
            "lease lost during auto-renew",
            {"lock_name": self.lease.lock_name, "reason": reason},
        )
        if self._on_lost is not None:
            try:
                self._on_lost(self.lease, reason)
            except Exception as err:
                emit_log_event(LogLevel.ERROR, "on_lost callback failed", {"error": repr(err)})
        if self._cancel is not None and not self._cancel.done():
            self._cancel.cancel(f"lease on {self.lease.lock_name!r} lost: {reason}")

    def convert_cancellation(self) -> None:
        """Inside ``except CancelledError``: if we caused it, raise LockExpiredError instead."""
        if self.lease.lost is not None and self._cancel is not None and self._cancel.cancelling():
            self._cancel.uncancel()
            raise LockExpiredError(
                f"lease on {self.lease.lock_name!r} was lost while held: {self.lease.lost}",
                lock_name=self.lease.lock_name,
            )
