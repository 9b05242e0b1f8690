"""Redis locks: redis-py's ``Lock`` (async and sync, two polling intervals) and python-redis-lock.

Redis is found on 127.0.0.1:6379 (or ``OMNINODE_BENCH_REDIS``); where none answers
and Debian's ``redis-server`` is installed, one is started on a free port for the run
(no persistence, as the default config of a cache). Otherwise the systems are skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from bench.peerlib.base import Facts, System, Unavailable, close_quietly, free_port, require

TTL = 30
WAIT = 30


class RedisServer:
    """The Redis the run uses: found, or started; its durability fact read from CONFIG."""

    def __init__(self) -> None:
        self.url = os.environ.get("OMNINODE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self.version = ""
        self.durability = "no"
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    async def ensure(self) -> str:
        if self.error is not None:
            raise Unavailable(self.error)
        if self.version:
            return self.url
        try:
            require("redis")
        except Unavailable as err:
            self.error = str(err)
            raise
        if not await self._ping():
            await self._start()
        await self._describe()
        return self.url

    async def _ping(self) -> bool:
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    async def _start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            self.error = (
                f"no Redis at {self.url} and no redis-server installed (apt-get install redis-server)"
            )
            raise Unavailable(self.error)
        port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="peers-redis-")
        self.proc = _spawn(binary, port, self._dir.name)
        self.url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            if await self._ping():
                return
            await asyncio.sleep(0.05)
        self.error = "the redis-server started for the bench did not answer"
        raise Unavailable(self.error)

    async def _describe(self) -> None:
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(self.url)
        try:
            info = await client.info("server")
            self.version = str(info.get("redis_version", "?"))
            aof = (await client.config_get("appendonly")).get("appendonly", "no")
            fsync = (await client.config_get("appendfsync")).get("appendfsync", "")
        except Exception:  # CONFIG may be renamed or disabled: say we could not tell
            aof, fsync = "unknown", ""
        finally:
            await client.aclose()
        if aof == "yes":
            self.durability = f"partly: AOF appendfsync={fsync} (a grant is not fsynced before the reply)"
        else:
            self.durability = f"no: in memory (appendonly={aof}; snapshots at best)"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()


def _spawn(binary: str, port: int, folder: str) -> subprocess.Popen[bytes]:
    """A throwaway redis-server: loopback only, no persistence (a cache's default)."""
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class _RedisSystem(System):
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.clients: list[Any] = []

    async def start(self) -> None:
        await self.server.ensure()
        self.facts = Facts(
            durable=self.server.durability,
            fencing="no",
            server_expiry="yes: key TTL on the Redis server",
        )


class _AsyncRedisSession:
    def __init__(self, client: Any, poll: float) -> None:
        self.client, self.poll = client, poll

    async def try_acquire(self, name: str) -> Any | None:
        lock = self.client.lock(name, timeout=TTL, sleep=self.poll)
        return lock if await lock.acquire(blocking=False) else None

    async def release(self, handle: Any) -> None:
        await handle.release()

    async def acquire_wait(self, name: str) -> Any:
        lock = self.client.lock(name, timeout=TTL, sleep=self.poll)
        if not await lock.acquire(blocking=True, blocking_timeout=WAIT):
            raise TimeoutError(name)
        return lock


class RedisPyAsync(_RedisSystem):
    key = "redis_py"
    json_key: str | None = "redis_py"
    label = "redis-py Lock, asyncio (default 0.1 s polling)"
    note = "redis.asyncio.Redis().lock(name, timeout=30); one connection pool per client"
    poll = 0.1

    async def open(self, clients: int, contended: bool) -> Sequence[_AsyncRedisSession]:
        import redis.asyncio as aredis

        self.clients = [aredis.Redis.from_url(self.server.url) for _ in range(clients)]
        return [_AsyncRedisSession(c, self.poll) for c in self.clients]

    async def close(self) -> None:
        await close_quietly(*(c.aclose() for c in self.clients))
        self.clients = []


class RedisPyAsync1ms(RedisPyAsync):
    key = "redis_py_1ms"
    json_key = None
    label = "redis-py Lock, asyncio, 1 ms polling"
    uncontended = False  # polling only matters while waiting
    poll = 0.001


class _SyncRedisSession:
    def __init__(self, client: Any, poll: float) -> None:
        self.client, self.poll = client, poll

    def try_acquire(self, name: str) -> Any | None:
        lock = self.client.lock(name, timeout=TTL, sleep=self.poll)
        return lock if lock.acquire(blocking=False) else None

    def release(self, handle: Any) -> None:
        handle.release()

    def acquire_wait(self, name: str) -> Any:
        lock = self.client.lock(name, timeout=TTL, sleep=self.poll)
        if not lock.acquire(blocking=True, blocking_timeout=WAIT):
            raise TimeoutError(name)
        return lock


class RedisPySync(_RedisSystem):
    key = "redis_py_sync"
    json_key: str | None = None
    label = "redis-py Lock, sync (default 0.1 s polling)"
    note = "redis.Redis().lock(name, timeout=30) from threads"
    is_sync = True
    poll = 0.1

    async def open(self, clients: int, contended: bool) -> Sequence[_SyncRedisSession]:
        import redis

        self.clients = [redis.Redis.from_url(self.server.url) for _ in range(clients)]
        return [_SyncRedisSession(c, self.poll) for c in self.clients]

    async def close(self) -> None:
        for c in self.clients:
            c.close()
        self.clients = []


class RedisPySync1ms(RedisPySync):
    key = "redis_py_sync_1ms"
    label = "redis-py Lock, sync, 1 ms polling"
    uncontended = False
    poll = 0.001


class _RedisLockSession:
    def __init__(self, client: Any) -> None:
        self.client = client

    def try_acquire(self, name: str) -> Any | None:
        import redis_lock  # type: ignore[import-untyped]

        lock = redis_lock.Lock(self.client, name, expire=TTL)
        return lock if lock.acquire(blocking=False) else None

    def release(self, handle: Any) -> None:
        handle.release()

    def acquire_wait(self, name: str) -> Any:
        import redis_lock

        lock = redis_lock.Lock(self.client, name, expire=TTL)
        if not lock.acquire(blocking=True, timeout=WAIT):
            raise TimeoutError(name)
        return lock


class PythonRedisLock(RedisPySync):
    key = "python_redis_lock"
    json_key = "python_redis_lock"
    label = "python-redis-lock (sync; hand-off by BLPOP signal)"
    note = "redis_lock.Lock(redis.Redis(), name, expire=30) from threads"

    async def start(self) -> None:
        require("redis_lock")
        await super().start()

    async def open(self, clients: int, contended: bool) -> Sequence[_RedisLockSession]:  # type: ignore[override]
        import redis

        self.clients = [redis.Redis.from_url(self.server.url) for _ in range(clients)]
        return [_RedisLockSession(c) for c in self.clients]
