"""``/v1/events`` over real HTTP against a real PostgreSQL (no broker): the long poll
resumes from ``after=ID`` with no gap while locks are taken through the API, wakes on
the commit rather than at the end of its wait, SSE delivers and resumes with
``Last-Event-ID``, bad parameters are 422s, and tokens are required when configured."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg
import httpx
import pytest
from events_helpers import dashboard_snapshot, take_and_release
from proxy import CuttableProxy
from svc_helpers import SCHEMA, Service

from omninode_bridge.locks import LockClient, LockSettings

pytestmark = pytest.mark.integration

ENVELOPE_KEYS = {
    "id", "event_id", "event_type", "lock_name", "owner_id", "token", "occurred_at", "correlation_id", "payload",
}  # fmt: skip


async def outbox_rows(dsn: str, after: int = 0) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT id, event_id, event_type, lock_name, owner_id, token FROM {SCHEMA}.events"
            " WHERE id > $1 ORDER BY id",
            after,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def last_id(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {SCHEMA}.events"))
    finally:
        await conn.close()


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error_code", "error_message", "details"}, body
    assert body["error_code"] == code and body["error_message"], body
    return dict(body)


async def test_long_poll_resumes_from_after_with_no_gap_while_locks_are_taken(
    http: httpx.AsyncClient, module_dsn: str
) -> None:
    start = await last_id(module_dsn)
    leases: list[str] = []
    seen: list[dict[str, Any]] = []
    writing = True

    async def writer(n: int) -> None:
        for i in range(20):
            leases.append(await take_and_release(http, f"gap:{n}:{i % 3}", owner=f"w{n}"))

    async def reader() -> None:
        after = start
        while True:
            resp = await http.get("/v1/events", params={"after": after, "wait": 0.5, "limit": 7})
            assert resp.status_code == 200, resp.text
            page = resp.json()
            assert set(page) == {"events", "next_after"}
            assert page["next_after"] == (page["events"][-1]["id"] if page["events"] else after)
            seen.extend(page["events"])
            after = page["next_after"]
            if not page["events"] and not writing:
                return

    reading = asyncio.ensure_future(reader())
    await asyncio.gather(*(writer(n) for n in range(4)))
    writing = False
    await asyncio.wait_for(reading, 60)

    rows = await outbox_rows(module_dsn, start)
    assert len(rows) == 4 * 20 * 2
    assert [e["id"] for e in seen] == [r["id"] for r in rows], "every event once, in outbox order"
    for event, row in zip(seen, rows, strict=True):
        assert set(event) == ENVELOPE_KEYS
        assert (event["event_id"], event["event_type"], event["lock_name"], event["owner_id"], event["token"]) == (
            str(row["event_id"]), row["event_type"], row["lock_name"], row["owner_id"], row["token"],
        )  # fmt: skip
    text = json.dumps(seen)
    assert "lease_id" not in text and not any(lease in text for lease in leases), "no lease id leaves"


async def test_lock_filter_and_paging_cursor(http: httpx.AsyncClient, module_dsn: str) -> None:
    start = await last_id(module_dsn)
    for i in range(3):
        await take_and_release(http, "filter:a" if i != 1 else "filter:b")
    resp = await http.get("/v1/events", params={"after": start, "lock": "filter:a"})
    events = resp.json()["events"]
    assert [e["lock_name"] for e in events] == ["filter:a"] * 4
    assert [e["event_type"] for e in events] == ["lock_acquired", "lock_released"] * 2
    first = (await http.get("/v1/events", params={"after": start, "limit": 1})).json()
    assert len(first["events"]) == 1 and first["next_after"] == first["events"][0]["id"]
    empty = (await http.get("/v1/events", params={"after": await last_id(module_dsn)})).json()
    assert empty["events"] == [] and empty["next_after"] == await last_id(module_dsn)


async def test_long_poll_wakes_within_milliseconds_of_the_commit(
    http: httpx.AsyncClient, module_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    after_commit, after_send, acquire_took = [], [], []
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=30) as writer:
        for i in range(10):
            after = await last_id(module_dsn)
            answered: list[float] = []
            polling = asyncio.ensure_future(http.get("/v1/events", params={"after": after, "wait": 30}))
            polling.add_done_callback(lambda _, done=answered: done.append(time.perf_counter()))
            await asyncio.sleep(0.3)
            assert not polling.done(), "nothing committed yet: the poll must still wait"
            sent = time.perf_counter()
            resp = await writer.post(f"/v1/locks/wake:{i}/acquire", json={"owner_id": "x", "ttl": 30})
            committed = time.perf_counter()  # the acquire's transaction committed before its answer
            assert resp.status_code == 200
            events = (await asyncio.wait_for(polling, 10)).json()["events"]
            assert [(e["event_type"], e["lock_name"]) for e in events] == [("lock_acquired", f"wake:{i}")]
            after_commit.append(answered[0] - committed)  # may be < 0: the poll answered first
            after_send.append(answered[0] - sent)  # an upper bound: includes the acquire itself
            acquire_took.append(committed - sent)
    ms = {k: [round(v * 1000, 1) for v in vs] for k, vs in
          (("after_commit", after_commit), ("after_send", after_send), ("acquire", acquire_took))}  # fmt: skip
    with capsys.disabled():
        print(f"\n  long-poll answered, ms after the acquire's answer (commit): median "
              f"{statistics.median(ms['after_commit']):.1f}, max {max(ms['after_commit'])}; after the acquire "
              f"was sent: median {statistics.median(ms['after_send']):.1f}, max {max(ms['after_send'])}; "
              f"the acquire took median {statistics.median(ms['acquire']):.1f}")  # fmt: skip
    assert statistics.median(after_commit) < 0.05, ms
    assert max(after_send) < 1.0, ms  # a 30 s wait: woken by the commit, not by a timer


class Sse:
    """Reads one server-sent-event response: events and comments, one at a time."""

    def __init__(self, resp: httpx.Response) -> None:
        self._lines = resp.aiter_lines()

    async def next(self, seconds: float = 20) -> dict[str, Any]:
        """The next event (``{"id", "event", "data"}``) or comment (``{"comment"}``)."""
        fields: dict[str, str] = {}
        deadline = time.monotonic() + seconds
        while True:
            line = await asyncio.wait_for(anext(self._lines), max(0.1, deadline - time.monotonic()))
            if line.startswith(":"):
                return {"comment": line[1:].strip()}
            if line == "" and "data" in fields:
                return {
                    "id": int(fields["id"]),
                    "event": fields.get("event"),
                    "data": json.loads(fields["data"]),
                }
            if line and not line.startswith("retry:"):
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")

    async def events(self, count: int, seconds: float = 20) -> list[dict[str, Any]]:
        """The next ``count`` events, skipping comments."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while len(out) < count:
            item = await self.next(deadline - time.monotonic())
            if "comment" not in item:
                out.append(item)
        return out


async def test_sse_delivers_and_resumes_with_last_event_id(http: httpx.AsyncClient, module_dsn: str) -> None:
    start = await last_id(module_dsn)
    params = {"after": start, "heartbeat": 1}
    async with http.stream("GET", "/v1/events/stream", params=params) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for i in range(3):
            await take_and_release(http, f"sse:{i}")
        first = await Sse(resp).events(4)
    assert [e["data"]["event_type"] for e in first] == ["lock_acquired", "lock_released"] * 2
    assert all(e["event"] is None and e["id"] == e["data"]["id"] for e in first), "unnamed: onmessage"
    # disconnected after 4 of 6; more commits meanwhile; reconnect as an EventSource does
    await take_and_release(http, "sse:3")
    headers = {"Last-Event-ID": str(first[-1]["id"])}
    async with http.stream("GET", "/v1/events/stream", params={"after": 0}, headers=headers) as resp:
        rest = await Sse(resp).events(4)  # Last-Event-ID wins over after=0
    rows = await outbox_rows(module_dsn, start)
    assert [e["id"] for e in first + rest] == [r["id"] for r in rows], "no gap, no repeat"
    assert [e["data"]["lock_name"] for e in rest] == ["sse:2", "sse:2", "sse:3", "sse:3"]


async def test_sse_by_accept_header_with_keep_alives(http: httpx.AsyncClient, module_dsn: str) -> None:
    after = await last_id(module_dsn)
    headers = {"Accept": "text/event-stream"}
    params = {"after": after, "heartbeat": 0.5}
    async with http.stream("GET", "/v1/events", params=params, headers=headers) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        sse = Sse(resp)
        started = time.monotonic()
        items = [await sse.next() for _ in range(3)]  # "connected", then keep-alives
        assert [i.get("comment") for i in items] == ["connected", "keep-alive", "keep-alive"]
        assert 0.5 <= time.monotonic() - started < 5
        await take_and_release(http, "sse:accept")
        got = await sse.events(2)
    assert [(e["data"]["event_type"], e["data"]["lock_name"]) for e in got] == [
        ("lock_acquired", "sse:accept"),
        ("lock_released", "sse:accept"),
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"after": "-1"},
        {"after": "abc"},
        {"wait": "61"},
        {"wait": "-0.5"},
        {"wait": "soon"},
        {"limit": "0"},
        {"limit": "1001"},
        {"lock": ""},
        {"lock": "x" * 256},
        {"lock": "a\x00b"},
        {"heartbeat": "0"},
    ],
)
async def test_bad_parameters_are_422(http: httpx.AsyncClient, params: dict[str, str]) -> None:
    body = assert_error(await http.get("/v1/events", params=params), 422, "VALIDATION_ERROR")
    field = next(iter(params))
    assert field in json.dumps(body), body
    if field != "wait":
        assert_error(await http.get("/v1/events/stream", params=params), 422, "VALIDATION_ERROR")


async def test_bad_last_event_id_is_422(http: httpx.AsyncClient) -> None:
    for value in ("abc", "-3", "1.5"):
        resp = await http.get("/v1/events/stream", headers={"Last-Event-ID": value})
        body = assert_error(resp, 422, "VALIDATION_ERROR")
        assert "Last-Event-ID" in body["error_message"]
        headers = {"Last-Event-ID": value, "Accept": "text/event-stream"}
        assert_error(await http.get("/v1/events", headers=headers), 422, "VALIDATION_ERROR")


async def test_without_kafka_no_relay_in_health_and_no_outbox_gauges(http: httpx.AsyncClient) -> None:
    await take_and_release(http, "norelay")
    health = await http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy" and "relay" not in health.json()
    text = (await http.get("/metrics")).text
    assert "distributed_lock_active_locks" in text
    for absent in ("distributed_lock_outbox_backlog", "distributed_lock_relay_lag_seconds", "relay_up"):
        assert absent not in text, "no relay: the backlog would only grow, so it is not exported"
    snapshot = await dashboard_snapshot(http)
    assert snapshot["relay"] is None, "no relay tile on the dashboard"
    assert any(e["lock"] == "norelay" and e["type"] == "lock_released" for e in snapshot["events"])


async def test_outbox_gauges_once_an_external_relay_registered(
    http: httpx.AsyncClient, module_dsn: str
) -> None:
    conn = await asyncpg.connect(module_dsn)
    try:
        await conn.execute(f"INSERT INTO {SCHEMA}.outbox_relays (relay_id, sink) VALUES ('ext', 'test')")
        await take_and_release(http, "gauge:ext")
        backlog = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.events WHERE relayed_at IS NULL")
        text = (await http.get("/metrics")).text
    finally:
        await conn.execute(f"DELETE FROM {SCHEMA}.outbox_relays WHERE relay_id = 'ext'")
        await conn.close()
    values = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if not line.startswith("#")
    }
    assert values["distributed_lock_outbox_backlog"] == backlog >= 2
    assert values["distributed_lock_relay_lag_seconds"] > 0
    assert "distributed_lock_relay_up" not in values, "no relay in this process"


async def test_openapi_documents_the_event_routes(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    names = {p["name"] for p in paths["/v1/events"]["get"]["parameters"]}
    assert {"after", "wait", "limit", "lock"} <= names
    stream_params = {(p["name"], p["in"]) for p in paths["/v1/events/stream"]["get"]["parameters"]}
    assert {("after", "query"), ("Last-Event-ID", "header")} <= stream_params
    assert "text/event-stream" in paths["/v1/events/stream"]["get"]["responses"]["200"]["content"]


async def test_tokens_are_required_when_configured(module_dsn: str) -> None:
    svc = await Service(module_dsn, OMNINODE_CLIENT_TOKENS="c-tok", OMNINODE_ADMIN_TOKENS="a-tok").start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
            for path in ("/v1/events", "/v1/events/stream"):
                assert_error(await http.get(path), 401, "UNAUTHORIZED")
                resp = await http.get(path, headers={"Authorization": "Bearer wrong"})
                assert_error(resp, 401, "UNAUTHORIZED")
            for token in ("c-tok", "a-tok"):
                resp = await http.get(
                    "/v1/events", params={"limit": 1}, headers={"Authorization": f"Bearer {token}"}
                )
                assert resp.status_code == 200 and set(resp.json()) == {"events", "next_after"}
            auth = {"Authorization": "Bearer c-tok", "Accept": "text/event-stream"}
            async with http.stream("GET", "/v1/events/stream", headers=auth) as resp:
                assert resp.status_code == 200
                assert (await Sse(resp).next()) == {"comment": "connected"}
    finally:
        await svc.stop()


async def test_database_outage_ends_the_stream_and_a_resume_after_it_has_no_gap(module_dsn: str) -> None:
    start = await last_id(module_dsn)
    proxy = await CuttableProxy(module_dsn).start()
    svc = await Service(proxy.dsn).start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            await take_and_release(http, "outage:before")
            async with http.stream(
                "GET", "/v1/events/stream", params={"after": start, "heartbeat": 1}
            ) as resp:
                sse = Sse(resp)
                before = await sse.events(2)
                proxy.cut()
                tail: list[dict[str, Any]] = []
                with pytest.raises(StopAsyncIteration):  # the server ends the stream
                    while len(tail) < 100:
                        tail.append(await sse.next(10))
            assert [t.get("comment", "") for t in tail][-1].startswith("database unavailable"), tail
            assert_error(await http.get("/v1/events", params={"after": start}), 503, "DATABASE_ERROR")
            proxy.heal()
            await wait_for_health(http)
            await take_and_release(http, "outage:after")
            resume = {"Last-Event-ID": str(before[-1]["id"])}
            async with http.stream("GET", "/v1/events/stream", headers=resume) as resp:
                after = await Sse(resp).events(2)
    finally:
        await svc.stop()
        await proxy.close()
    rows = await outbox_rows(module_dsn, start)
    assert [e["id"] for e in before + after] == [r["id"] for r in rows]
    assert [r["lock_name"] for r in rows] == ["outage:before"] * 2 + ["outage:after"] * 2


async def wait_for_health(http: httpx.AsyncClient, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while (await http.get("/health")).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover"
        await asyncio.sleep(0.2)


async def test_a_hung_up_long_poll_is_abandoned_quietly(service: Service, module_dsn: str) -> None:
    after = await last_id(module_dsn)
    async with httpx.AsyncClient(base_url=service.url, timeout=0.3) as quitter:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            await quitter.get("/v1/events", params={"after": after, "wait": 30})
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        await asyncio.sleep(0.5)  # the server notices the hang-up and cancels the wait
        await take_and_release(http, "after-hangup")
        page = (await http.get("/v1/events", params={"after": after})).json()
    assert [e["lock_name"] for e in page["events"]] == ["after-hangup"] * 2
    log = service.output()
    assert "unhandled error" not in log and "Traceback" not in log, log[-2000:]


async def test_correlation_id_of_the_writing_transaction_reaches_the_feed(
    http: httpx.AsyncClient, module_dsn: str
) -> None:
    """The outbox column of migration 0003 reads ``omninode.correlation_id`` from the
    writing transaction; the HTTP feed shows it, and null where the writer set none."""
    start = await last_id(module_dsn)
    settings = LockSettings(dsn=module_dsn, schema=SCHEMA)
    async with LockClient.connect(settings=settings, cleanup=False, run_migrations=False) as locks:
        async with locks.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('omninode.correlation_id', 'req-feed-7', true)")
            lease = await locks.acquire("corr:feed", conn=conn)
        await locks.release(lease)
    resp = await http.get("/v1/events", params={"after": start, "lock": "corr:feed"})
    assert resp.status_code == 200, resp.text
    by_type = {e["event_type"]: e for e in resp.json()["events"]}
    assert by_type["lock_acquired"]["correlation_id"] == "req-feed-7"
    assert by_type["lock_released"]["correlation_id"] is None
