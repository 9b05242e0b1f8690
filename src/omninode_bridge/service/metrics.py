"""Prometheus metrics with the SPEC §4 names, one registry per application (so several
apps in one process, as in tests, do not collide). Counters and histograms are moved
by the routes; gauges are read from the database and the pool at scrape time."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from omninode_bridge.locks.client import LockClient

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.acquires = Counter(
            "distributed_lock_acquires", "Acquire requests by result", ["result"], registry=r
        )
        self.releases = Counter("distributed_lock_releases", "Successful releases", registry=r)
        self.extends = Counter("distributed_lock_extends", "Successful extends", registry=r)
        self.expired = Counter(
            "distributed_lock_expired", "Expired leases reaped by this instance", registry=r
        )
        self.deadlocks = Counter("distributed_lock_deadlocks", "Acquires refused as deadlocks", registry=r)
        self.force_releases = Counter(
            "distributed_lock_force_releases", "Leases freed by an admin", registry=r
        )
        self.acquire_seconds = Histogram(
            "distributed_lock_acquire_duration_seconds",
            "Acquire latency (including long-poll waiting)",
            registry=r,
            buckets=_BUCKETS,
        )
        self.release_seconds = Histogram(
            "distributed_lock_release_duration_seconds", "Release latency", registry=r, buckets=_BUCKETS
        )
        self.active_locks = Gauge("distributed_lock_active_locks", "Locks held now (database)", registry=r)
        self.active_leases = Gauge("distributed_lock_active_leases", "Leases held now (database)", registry=r)
        self.waiters = Gauge("distributed_lock_waiters", "Queued acquires (database)", registry=r)
        self.local_waiters = Gauge(
            "distributed_lock_local_waiters", "Long-poll acquires waiting in this instance", registry=r
        )
        self.pool_size = Gauge("distributed_lock_db_pool_size", "Open pool connections", registry=r)
        self.pool_idle = Gauge("distributed_lock_db_pool_idle", "Idle pool connections", registry=r)
        self.pool_max = Gauge("distributed_lock_db_pool_max", "Pool size limit", registry=r)
        self.db_retries = Gauge(
            "distributed_lock_db_retries", "Transient database errors retried (engine)", registry=r
        )
        self.db_up = Gauge("distributed_lock_db_up", "1 when the last database check succeeded", registry=r)
        # (monotonic time, seconds) of recent granted acquires, for the dashboard's rate
        self.recent_acquires: deque[tuple[float, float]] = deque(maxlen=20_000)

    def granted(self, seconds: float) -> None:
        self.acquires.labels("granted").inc()
        self.recent_acquires.append((time.monotonic(), seconds))

    def acquire_rate(self, window: float = 10.0) -> dict[str, float]:
        """Grants per second over the last ``window`` s and their p50/p95 latency (ms)."""
        since = time.monotonic() - window
        durations = sorted(d for t, d in self.recent_acquires if t >= since)
        if not durations:
            return {"per_s": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}

        def pick(q: float) -> float:
            return durations[min(len(durations) - 1, int(q * len(durations)))] * 1000

        return {
            "per_s": round(len(durations) / window, 2),
            "p50_ms": round(pick(0.5), 2),
            "p95_ms": round(pick(0.95), 2),
        }
        pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] * 1000  # noqa: E731
        return {
            "per_s": round(len(durations) / window, 2),
            "p50_ms": round(pick(0.5), 2),
            "p95_ms": round(pick(0.95), 2),
        }

    async def render(self, locks: LockClient | None) -> bytes:
        """The text exposition, after refreshing the gauges (a failed database read
        sets ``db_up`` to 0 and keeps the last known values; ``None``: not connected yet)."""
        if locks is None:
            self.db_up.set(0)
            return generate_latest(self.registry)
        pool = locks.pool
        self.pool_size.set(pool.get_size())
        self.pool_idle.set(locks.idle_connections())  # the engine keeps some between calls
        self.pool_max.set(pool.get_max_size())
        self.local_waiters.set(locks.stats.waiting)
        self.db_retries.set(locks.stats.retries)
        try:
            counts = await locks.counts()
        except Exception:
            self.db_up.set(0)
        else:
            self.db_up.set(1)
            self.active_locks.set(counts.get("active_locks", 0))
            self.active_leases.set(counts.get("active_leases", 0))
            self.waiters.set(counts.get("waiters", 0))
        return generate_latest(self.registry)
