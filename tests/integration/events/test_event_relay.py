"""The relay against a real Kafka-protocol broker (Tansu), read back with aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from workload import run_workload

from conftest import Broker, consume, outbox, wait_until
from omninode_bridge.events import KafkaSink, OutboxWakeup, Relay, outbox_stats, topic_for
from omninode_bridge.locks import LockClient, LockSettings

pytestmark = pytest.mark.integration
SCHEMA = "omninode_locks"


@contextlib.asynccontextmanager
async def running_relay(dsn: str, broker: Broker, prefix: str, **kw: Any) -> AsyncIterator[Relay]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    wakeup = OutboxWakeup(dsn, SCHEMA)
    await wakeup.start()
    relay = Relay(pool, SCHEMA, KafkaSink(broker.bootstrap, prefix), wakeup, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await relay.sink.stop()
        await wakeup.close()
        await pool.close()


async def drained(pool: asyncpg.Pool) -> bool:
    return (await outbox_stats(pool, SCHEMA)).backlog == 0


def check_delivery(messages: list[dict[str, Any]], rows: list[dict[str, Any]], *, exactly_once: bool) -> None:
    """Every outbox row is in Kafka (after de-duplication by event_id), nothing else is,
    and per topic and lock the messages are in outbox (= commit) order."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        by_id[m["value"]["event_id"]].append(m)
    expected = {str(r["event_id"]): r for r in rows}
    assert set(by_id) == set(expected)
    if exactly_once:
        assert len(messages) == len(rows), "a normal run sends every event once"
    for event_id, copies in by_id.items():
        row = expected[event_id]
        for m in copies:  # a duplicate is the same event: same id, same content
            assert m["value"] == copies[0]["value"]
            assert m["key"] == row["lock_name"].encode()
            assert m["topic"] == topic_for(row["event_type"], m["topic"].split(".lock.")[0])
            assert m["value"]["id"] == row["id"]
            assert m["value"]["token"] == row["token"]
    per_key: dict[tuple[str, bytes], list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        per_key[(m["topic"], m["key"])].append(m)
    for stream in per_key.values():
        stream.sort(key=lambda m: (m["partition"], m["offset"]))
        assert len({m["partition"] for m in stream}) == 1, "one lock, one partition"
        ids = [m["value"]["id"] for m in stream]
        firsts = [i for n, i in enumerate(ids) if i not in ids[:n]]
        assert firsts == sorted(firsts), "commit order per lock"


async def test_random_workload_reaches_kafka_exactly_once_in_order(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    async with running_relay(dsn, broker, prefix, batch_size=50) as relay:
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            await run_workload(locks, seconds=3.0)
        await wait_until(lambda: drained(pool))
        status = await relay.full_status()
        assert status.state == "ok" and status.broker_reachable and status.backlog == 0
    rows = await outbox(dsn)
    kinds = {r["event_type"] for r in rows}
    assert kinds == {"lock_acquired", "lock_released", "lock_extended", "lock_expired",
                     "lock_force_released", "deadlock_detected"}  # fmt: skip
    assert all(r["relayed_at"] is not None for r in rows)
    messages = await consume(broker.bootstrap, prefix, len(rows))
    check_delivery(messages, rows, exactly_once=True)
    leases = {str(r["lease_id"]) for r in rows if r["lease_id"] is not None}
    for m in messages:
        value = m["value"]
        assert set(value) == {"id", "event_id", "event_type", "lock_name", "owner_id", "token",
                              "occurred_at", "correlation_id", "payload"}  # fmt: skip
        assert "lease_id" not in str(value) and not any(lease in str(value) for lease in leases)
        assert value["occurred_at"].endswith("Z") and datetime.fromisoformat(value["occurred_at"])
    # across topics the relay published in commit order too: per lock, a later event
    # never carries an earlier producer timestamp
    by_lock: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for m in messages:
        by_lock[m["value"]["lock_name"]].append((m["value"]["id"], m["timestamp"]))
    for stamps in by_lock.values():
        stamps.sort()
        assert [t for _, t in stamps] == sorted(t for _, t in stamps)
