"""The two peer scenarios, for async sessions (tasks) and sync sessions (threads).

* **pairs** — every client try-locks its own name and releases it, in a loop: no
  contention. Records the acquire latency of each pair and the pairs done.
* **contended** — every contender blocks for one shared name, holds it ``hold`` s,
  releases, and goes again. Records grants per contender and hand-offs: the time from
  the holder starting its release to the next holder's grant, both stamped with
  ``time.perf_counter()`` in this process, counted only for a contender that was already
  waiting when the release began.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from bench.peerlib.base import AsyncSession, SyncSession


class BenchError(Exception):
    """A system misbehaved during a measurement (a try-lock on a free name refused...)."""


@dataclass
class Pairs:
    ops: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed if self.elapsed else 0.0


@dataclass
class Contended:
    counts: list[int]
    handoffs: list[float]
    elapsed: float

    @property
    def rate(self) -> float:
        return sum(self.counts) / self.elapsed if self.elapsed else 0.0


async def pairs(sessions: Sequence[Any], is_sync: bool, seconds: float, prefix: str) -> Pairs:
    """Uncontended try-lock pairs for ``seconds``; each session its own name."""
    if is_sync:
        return await asyncio.to_thread(_pairs_sync, cast(Sequence[SyncSession], sessions), seconds, prefix)
    return await _pairs_async(cast(Sequence[AsyncSession], sessions), seconds, prefix)


async def _pairs_async(sessions: Sequence[AsyncSession], seconds: float, prefix: str) -> Pairs:
    result = Pairs()
    stop = time.perf_counter() + seconds

    async def loop(i: int, s: AsyncSession) -> None:
        name = f"{prefix}:{i}"
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            handle = await s.try_acquire(name)
            result.latencies.append(time.perf_counter() - t0)
            if handle is None:
                raise BenchError(f"try-lock of the free name {name} was refused")
            await s.release(handle)
            result.ops += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(i, s) for i, s in enumerate(sessions)))
    result.elapsed = time.perf_counter() - started
    return result


def _pairs_sync(sessions: Sequence[SyncSession], seconds: float, prefix: str) -> Pairs:
    result = Pairs()
    stop = time.perf_counter() + seconds
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop(i: int, s: SyncSession) -> None:
        name = f"{prefix}:{i}"
        mine: list[float] = []
        done = 0
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                handle = s.try_acquire(name)
                mine.append(time.perf_counter() - t0)
                if handle is None:
                    raise BenchError(f"try-lock of the free name {name} was refused")
                s.release(handle)
                done += 1
        except BaseException as err:
            errors.append(err)
        with lock:
            result.latencies.extend(mine)
            result.ops += done

    started = time.perf_counter()
    _run_threads([threading.Thread(target=loop, args=(i, s)) for i, s in enumerate(sessions)])
    result.elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return result


async def contended(
    sessions: Sequence[Any], is_sync: bool, seconds: float, hold: float, name: str
) -> Contended:
    """Every session blocks for ``name``, holds ``hold`` s, releases; for ``seconds``."""
    if is_sync:
        return await asyncio.to_thread(
            _contended_sync, cast(Sequence[SyncSession], sessions), seconds, hold, name
        )
    return await _contended_async(cast(Sequence[AsyncSession], sessions), seconds, hold, name)


async def _contended_async(
    sessions: Sequence[AsyncSession], seconds: float, hold: float, name: str
) -> Contended:
    out = Contended([0] * len(sessions), [], 0.0)
    last_release = [0.0]
    stop = time.perf_counter() + seconds

    async def worker(i: int, s: AsyncSession) -> None:
        while time.perf_counter() < stop:
            asked = time.perf_counter()
            handle = await s.acquire_wait(name)
            granted = time.perf_counter()
            if asked < last_release[0] < granted:
                out.handoffs.append(granted - last_release[0])
            if granted < stop:
                out.counts[i] += 1
            await asyncio.sleep(hold)
            last_release[0] = time.perf_counter()
            await s.release(handle)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, s) for i, s in enumerate(sessions)))
    out.elapsed = min(seconds, time.perf_counter() - started)
    return out


def _contended_sync(sessions: Sequence[SyncSession], seconds: float, hold: float, name: str) -> Contended:
    out = Contended([0] * len(sessions), [], 0.0)
    last_release = [0.0]
    stop = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def worker(i: int, s: SyncSession) -> None:
        try:
            while time.perf_counter() < stop:
                asked = time.perf_counter()
                handle = s.acquire_wait(name)
                granted = time.perf_counter()
                if asked < last_release[0] < granted:
                    out.handoffs.append(granted - last_release[0])
                if granted < stop:
                    out.counts[i] += 1
                time.sleep(hold)
                last_release[0] = time.perf_counter()
                s.release(handle)
        except BaseException as err:
            errors.append(err)

    started = time.perf_counter()
    _run_threads([threading.Thread(target=worker, args=(i, s)) for i, s in enumerate(sessions)])
    out.elapsed = min(seconds, time.perf_counter() - started)
    if errors:
        raise errors[0]
    return out


def _run_threads(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join()
