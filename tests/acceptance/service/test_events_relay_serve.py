"""``omninode-lock serve`` with Kafka configured runs the outbox relay inside the service:
events taken through the API reach a real Kafka-protocol broker (Tansu) and a real
aiokafka consumer; while the broker is stopped (SIGSTOP) locks keep working, ``/health``
answers 200 with ``"status": "degraded"`` and the backlog grows, and after it returns
the backlog drains and the service is healthy again."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from events_helpers import dashboard_snapshot, take_and_release
from prometheus_client.parser import text_string_to_metric_families
from svc_helpers import SCHEMA, Service

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "events"))
from relay_helpers import Broker, broker, consume, prefix, wait_until

pytestmark = pytest.mark.integration
__all__ = ["broker", "prefix"]  # fixtures


async def outbox(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT id, event_id, lock_name, relayed_at FROM {SCHEMA}.events ORDER BY id"
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def gauges(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


async def check_delivered(broker: Broker, prefix: str, dsn: str, leases: list[str]) -> None:
    """The broker holds every outbox event (once, after de-duplication by event_id), in
    outbox order per lock, and never a lease id."""
    rows = await outbox(dsn)
    assert rows and all(r["relayed_at"] is not None for r in rows)
    messages = await consume(broker.bootstrap, prefix, len(rows))
    first_seen: dict[str, dict[str, Any]] = {}
    for m in messages:
        first_seen.setdefault(m["value"]["event_id"], m)
    assert set(first_seen) == {str(r["event_id"]) for r in rows}
    by_id = {str(r["event_id"]): r for r in rows}
    streams: dict[tuple[str, bytes], list[dict[str, Any]]] = {}
    for m in messages:
        assert m["key"] == by_id[m["value"]["event_id"]]["lock_name"].encode()
        assert m["value"]["id"] == by_id[m["value"]["event_id"]]["id"]
        streams.setdefault((m["topic"], m["key"]), []).append(m)
    for stream in streams.values():  # Kafka orders within a partition: per topic and lock
        stream.sort(key=lambda m: (m["partition"], m["offset"]))
        ids = list(dict.fromkeys(m["value"]["id"] for m in stream))
        assert ids == sorted(ids), "commit order per lock"
    raw = repr([m["value"] for m in messages])
    assert "lease_id" not in raw and not any(lease in raw for lease in leases)


async def test_serve_with_kafka_relays_and_degrades_while_the_broker_is_stopped(
    dsn: str, broker: Broker, prefix: str
) -> None:
    svc = Service(dsn, OMNINODE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, OMNINODE_KAFKA_TOPIC_PREFIX=prefix)
    await svc.start()
    leases: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:

            async def health() -> dict[str, Any]:
                resp = await http.get("/health")
                assert resp.status_code == 200, resp.text  # never 503 for the relay: locks work
                body: dict[str, Any] = resp.json()
                return body

            async def relay_is(state: str, backlog: int | None = None) -> bool:
                body = await health()
                relay = body["relay"]
                status = "healthy" if state == "ok" else "degraded"
                return bool(
                    relay["state"] == state
                    and body["status"] == status
                    and (backlog is None or relay["backlog"] == backlog)
                )

            for i in range(10):
                leases.append(await take_and_release(http, f"relayed:{i % 3}"))
            await wait_until(lambda: relay_is("ok", backlog=0), seconds=30)
            body = await health()
            assert set(body["relay"]) >= {"state", "backlog", "lag_s"} and body["relay"]["lag_s"] == 0
            metrics = gauges((await http.get("/metrics")).text)
            assert metrics["distributed_lock_outbox_backlog"] == 0
            assert metrics["distributed_lock_relay_lag_seconds"] == 0
            assert metrics["distributed_lock_relay_up"] == 1
            relay_tile = (await dashboard_snapshot(http))["relay"]
            assert (relay_tile["state"], relay_tile["backlog"]) == ("ok", 0)
            await check_delivered(broker, prefix, dsn, leases)

            broker.pause()
            try:
                started = time.monotonic()
                for i in range(10):  # locks keep working while the broker is away
                    leases.append(await take_and_release(http, f"outage:{i % 4}"))
                assert time.monotonic() - started < 10
                await wait_until(lambda: relay_is("degraded"), seconds=30)
                body = await health()
                assert body["relay"]["broker_reachable"] is False
                assert body["relay"]["backlog"] >= 20 and body["relay"]["lag_s"] > 0
                metrics = gauges((await http.get("/metrics")).text)
                assert metrics["distributed_lock_outbox_backlog"] >= 20
                assert metrics["distributed_lock_relay_lag_seconds"] > 0
                assert metrics["distributed_lock_relay_up"] == 0
                relay_tile = (await dashboard_snapshot(http))["relay"]
                assert relay_tile["state"] == "degraded" and relay_tile["backlog"] >= 20
            finally:
                broker.resume()
            await wait_until(lambda: relay_is("ok", backlog=0), seconds=60)
            metrics = gauges((await http.get("/metrics")).text)
            assert metrics["distributed_lock_outbox_backlog"] == 0
        await check_delivered(broker, prefix, dsn, leases)

        # shut down cleanly: SIGINT stops the relay task and the service exits in time
        assert svc.proc is not None
        stopping = time.monotonic()
        svc.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(svc.proc.wait(), 10)
        assert time.monotonic() - stopping < 8
        log = svc.output()
        assert "Traceback" not in log and "event relay failed" not in log, log[-3000:]
        conn = await asyncpg.connect(dsn)
        try:
            relays = await conn.fetch(f"SELECT sink, relayed FROM {SCHEMA}.outbox_relays")
        finally:
            await conn.close()
        # one relay, the configured one; its last heartbeat (written as it stopped) counts all
        assert [(r["sink"], r["relayed"] >= 40) for r in relays] == [
            (f"kafka:{broker.bootstrap}/{prefix}", True)
        ]
    finally:
        await svc.stop()


async def test_serve_stops_promptly_with_the_broker_stopped(dsn: str, broker: Broker, prefix: str) -> None:
    svc = Service(dsn, OMNINODE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, OMNINODE_KAFKA_TOPIC_PREFIX=prefix)
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            broker.pause()
            await take_and_release(http, "stuck")  # a round now waits on the stopped broker
            await asyncio.sleep(0.5)
        assert svc.proc is not None
        stopping = time.monotonic()
        svc.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(svc.proc.wait(), 15)
        assert time.monotonic() - stopping < 9, "the relay round in flight is given up, not awaited"
    finally:
        broker.resume()
        await svc.stop()
    rows = await outbox(dsn)
    assert len(rows) == 2 and all(r["relayed_at"] is None for r in rows), "not acknowledged: not marked"


async def test_dashboard_shows_the_relay_backlog_in_a_browser(dsn: str, broker: Broker, prefix: str) -> None:
    from test_dashboard_browser import CHROMIUM, HAVE_CHROMIUM

    if not HAVE_CHROMIUM:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    svc = Service(dsn, OMNINODE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, OMNINODE_KAFKA_TOPIC_PREFIX=prefix)
    await svc.start()
    try:
        async with async_playwright() as pw, httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page()
            await page.goto(svc.url + "/")
            tile = page.locator("#relay-tile")
            await tile.wait_for(state="visible", timeout=15_000)
            await take_and_release(http, "tile")
            await page.wait_for_function(
                "document.querySelector('#t-relay').textContent.startsWith('0 backlog')"
                " && document.querySelector('#t-relay').textContent.endsWith(' ok')",
                timeout=15_000,
            )
            broker.pause()
            try:
                for i in range(5):
                    await take_and_release(http, f"tile:{i}")
                shown = ""
                deadline = time.monotonic() + 30
                while not re.fullmatch(r"[1-9][0-9]* backlog · [0-9.]+ s lag · degraded", shown):
                    assert time.monotonic() < deadline, (shown, (await http.get("/health")).json())
                    await asyncio.sleep(0.1)
                    shown = await page.locator("#t-relay").inner_text()
            finally:
                broker.resume()
            await page.wait_for_function(
                "document.querySelector('#t-relay').textContent.startsWith('0 backlog')", timeout=60_000
            )
            await browser.close()
    finally:
        await svc.stop()
