"""Retries with exponential backoff and full jitter, and a circuit breaker.

Both take an injectable clock and sleep so their logic is tested without waiting.
Only transient database failures are retried; every engine call is idempotent by
construction (client-chosen lease ids), so a retry finds its own earlier effect.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from omninode_bridge.locks.errors import LockDatabaseError

T = TypeVar("T")

_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected (PostgreSQL's own)
    "57P01",  # admin_shutdown (pg_terminate_backend)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up / failover)
    "53300",  # too_many_connections
    "25006",  # read_only_sql_transaction (failover to a standby)
}


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` is worth retrying: lost connections, failover, serialization."""
    transient = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError)
    if isinstance(err, transient):
        return True
    if isinstance(err, asyncpg.InterfaceError):
        text = str(err).lower()
        return "closed" in text or "connection" in text
    sqlstate = getattr(err, "sqlstate", None)
    return sqlstate in _TRANSIENT_SQLSTATES or (isinstance(sqlstate, str) and sqlstate.startswith("08"))


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_after`` seconds one
    trial call is let through (half-open) and its outcome closes or re-opens it."""

    threshold: int = 5
    reset_after: float = 5.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_after else "open"

    def before_call(self) -> None:
        """Raise ``DATABASE_ERROR`` at once while the breaker is open."""
        if self.opened_at is not None and self.state == "open":  # closed: skip the property
            raise LockDatabaseError(
                "database unavailable (circuit breaker open after repeated failures)",
                retry_after_s=round(self.reset_after - (self.clock() - (self.opened_at or 0.0)), 3),
            )

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold or self.state == "half_open":
            self.opened_at = self.clock()


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by the caller's deadline."""

    base_delay: float = 0.02
    max_delay: float = 1.0
    max_attempts: int = 8
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Sleep before retry number ``attempt`` (1-based)."""
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        deadline: float,
        breaker: CircuitBreaker | None = None,
    ) -> tuple[T, int]:
        """Run ``call`` until it succeeds, fails permanently, or ``deadline`` passes.

        Returns the result and the number of retries made.
        """
        attempt = 0
        while True:
            if breaker is not None:
                breaker.before_call()
            try:
                result = await call()
            except Exception as err:
                if not is_transient(err):
                    raise
                if breaker is not None:
                    breaker.record_failure()
                attempt += 1
                pause = self.delay(attempt)
                if attempt >= self.max_attempts or self.clock() + pause > deadline:
                    raise LockDatabaseError(
                        f"database error after {attempt} attempt(s): {type(err).__name__}",
                        attempts=attempt,
                    ) from err
                await self.sleep(pause)
                continue
            if breaker is not None:
                breaker.record_success()
            return result, attempt
