"""Retry policy and circuit breaker, with an injected clock and sleep (no I/O)."""

from __future__ import annotations

import random

import asyncpg
import pytest

from omninode_bridge.locks.errors import LockDatabaseError, LockHeldByOtherError
from omninode_bridge.locks.retry import CircuitBreaker, RetryPolicy, is_transient


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(t: FakeTime, **kw: object) -> RetryPolicy:
    return RetryPolicy(clock=t.clock, sleep=t.sleep, rng=random.Random(7), **kw)  # type: ignore[arg-type]


async def test_transient_errors_are_retried_with_growing_jittered_backoff() -> None:
    t = FakeTime()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionResetError("reset")
        return "ok"

    result, retries = await policy(t, base_delay=0.1, max_delay=10).run(flaky, deadline=100)
    assert (result, retries, calls) == ("ok", 3, 4)
    caps = [0.1, 0.2, 0.4]
    assert all(0 <= s <= cap for s, cap in zip(t.sleeps, caps, strict=True))


async def test_permanent_errors_are_not_retried() -> None:
    t = FakeTime()

    async def busy() -> None:
        raise LockHeldByOtherError("held")

    with pytest.raises(LockHeldByOtherError):
        await policy(t).run(busy, deadline=100)
    assert t.sleeps == []


async def test_retries_stop_at_the_callers_deadline() -> None:
    t = FakeTime()

    async def down() -> None:
        raise OSError("refused")

    with pytest.raises(LockDatabaseError) as info:
        await policy(t, base_delay=1, max_delay=1, max_attempts=100).run(down, deadline=3)
    assert t.now <= 3
    assert isinstance(info.value.__cause__, OSError)


async def test_breaker_opens_fails_fast_then_half_opens() -> None:
    t = FakeTime()
    breaker = CircuitBreaker(threshold=3, reset_after=5, clock=t.clock)
    attempts = 0

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError("down")

    with pytest.raises(LockDatabaseError):
        await policy(t, base_delay=0.001, max_attempts=3).run(down, deadline=1000, breaker=breaker)
    assert breaker.state == "open" and attempts == 3
    with pytest.raises(LockDatabaseError, match="circuit breaker open"):
        await policy(t).run(down, deadline=1000, breaker=breaker)
    assert attempts == 3, "an open breaker must not touch the database"
    t.now += 5
    assert breaker.state == "half_open"

    async def up() -> str:
        return "back"

    assert (await policy(t).run(up, deadline=1000, breaker=breaker))[0] == "back"
    assert breaker.state == "closed"


def test_transient_classification() -> None:
    assert is_transient(OSError())
    assert is_transient(asyncpg.exceptions.SerializationError("x"))
    assert is_transient(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_transient(asyncpg.InterfaceError("connection is closed"))
    assert not is_transient(asyncpg.exceptions.UniqueViolationError("x"))
    assert not is_transient(ValueError())
