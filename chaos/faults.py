"""The faults a run injects, one function each, and the order they come in.

``Faults.inject(kind)`` performs one fault and returns when the system may recover
(a stopped client is resumed, a partition healed, a killed process restarted).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from chaos.run import Harness

KILL_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
   AND ($1 OR query NOT LIKE 'LISTEN%') ORDER BY random() LIMIT $2
"""
KILL_LISTEN_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND (query LIKE 'LISTEN%' OR pid IN (SELECT listener_pid FROM omninode_locks.waiters))
"""


class Faults:
    def __init__(self, harness: Harness, rng: random.Random) -> None:
        self.h, self.rng = harness, rng
        self.done: Counter[str] = Counter()
        self.log: list[dict[str, object]] = []
        self.kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "conn_kill": self.conn_kill,
            "listen_kill": self.listen_kill,
            "pg_restart_fast": lambda: self.pg_restart("fast"),
            "pg_restart_immediate": lambda: self.pg_restart("immediate"),
            "sigstop": self.sigstop,
            "service_kill": self.service_kill,
            "relay_kill": self.relay_kill,
            "net_loss": lambda: self.net("loss", 3.0),
            "net_delay": lambda: self.net("delay", 3.0),
            "net_partition": lambda: self.net("partition", 4.5),
        }

    def available(self, wanted: set[str]) -> list[str]:
        return [k for k in self.kinds if k in wanted and k not in self.h.skipped]

    async def inject(self, kind: str) -> None:
        started = time.monotonic()
        await self.kinds[kind]()
        self.done[kind] += 1
        self.log.append({"kind": kind, "t0": started, "t1": time.monotonic()})  # for --keep

    async def _sql(self, sql: str, *args: object) -> int:
        conn = await asyncpg.connect(self.h.dsn, timeout=5)
        try:
            return len(await conn.fetch(sql, *args, timeout=10))
        finally:
            await conn.close()

    async def conn_kill(self) -> None:
        await self._sql(KILL_SQL, False, self.rng.randint(1, 4))

    async def listen_kill(self) -> None:
        await self._sql(KILL_LISTEN_SQL)

    async def pg_restart(self, mode: str) -> None:
        await asyncio.to_thread(self.h.cluster.restart, mode)

    async def sigstop(self) -> None:
        client = self.rng.choice(self.h.clients)
        client.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(self.rng.uniform(3.5, 5.0))  # past the longest TTL (3 s)
        finally:
            client.signal(signal.SIGCONT)

    async def service_kill(self) -> None:
        await asyncio.to_thread(self.h.service.kill9)
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        await asyncio.to_thread(self.h.start_service)

    async def relay_kill(self) -> None:
        assert self.h.relay is not None
        await asyncio.to_thread(self.h.relay.kill9)
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        self.h.relay.start()

    async def net(self, kind: str, seconds: float) -> None:
        assert self.h.netns is not None
        await asyncio.to_thread(getattr(self.h.netns, kind))
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(self.h.netns.clear)
