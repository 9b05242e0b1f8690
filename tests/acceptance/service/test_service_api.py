"""The HTTP API over real HTTP against a real PostgreSQL: every error code with its
status and body, every bad input refused with a 4xx and no state change, metrics,
health, long polls and the secrecy of lease ids."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from proxy import CuttableProxy
from svc_helpers import SCHEMA, Service, table_snapshot

pytestmark = pytest.mark.integration


async def acquire(http: httpx.AsyncClient, name: str, owner: str = "a", **body: Any) -> httpx.Response:
    return await http.post(f"/v1/locks/{name}/acquire", json={"owner_id": owner, **body})


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error_code", "error_message", "details"}, body
    assert body["error_code"] == code, body
    assert body["error_message"]
    return dict(body)


async def test_acquire_extend_release_round_trip(http: httpx.AsyncClient) -> None:
    resp = await acquire(http, "rt", ttl=10, metadata={"job": 7})
    assert resp.status_code == 200, resp.text
    lease = resp.json()
    assert set(lease) == {
        "lock_name",
        "owner_id",
        "mode",
        "lease_id",
        "token",
        "acquired_at",
        "expires_at",
        "ttl",
        "metadata",
    }
    assert lease["lock_name"] == "rt" and lease["mode"] == "exclusive" and lease["metadata"] == {"job": 7}
    assert lease["expires_at"].endswith("+00:00")
    ext = await http.post("/v1/locks/rt/extend", json={"lease_id": lease["lease_id"], "ttl": 60})
    assert ext.status_code == 200 and ext.json()["ttl"] == 60 and ext.json()["token"] == lease["token"]
    rel = await http.post("/v1/locks/rt/release", json={"lease_id": lease["lease_id"]})
    assert rel.status_code == 200 and rel.json()["already_released"] is False
    again = await http.post("/v1/locks/rt/release", json={"lease_id": lease["lease_id"]})
    assert again.status_code == 200 and again.json()["already_released"] is True
    nxt = await acquire(http, "rt", "b")
    assert nxt.json()["token"] > lease["token"]


async def test_a_lease_of_another_lock_is_refused_by_the_route_and_left_alone(
    http: httpx.AsyncClient,
) -> None:
    """The route names the lock: ``/v1/locks/b/release`` with a lease of lock ``a`` must not
    release ``a`` (it did, and answered ``{"lock_name": "b", "released": true}``)."""
    a = (await acquire(http, "route-a", ttl=30)).json()
    await acquire(http, "route-b", ttl=30)
    for action, body in (
        ("release", {"lease_id": a["lease_id"]}),
        ("extend", {"lease_id": a["lease_id"], "ttl": 300}),
    ):
        resp = await http.post(f"/v1/locks/route-b/{action}", json=body)
        assert_error(resp, 409, "LOCK_NOT_HELD")
        assert "not one of this lock" in resp.text
    held = (await http.get("/v1/locks/route-a")).json()
    assert [h["owner_id"] for h in held["holders"]] == [a["owner_id"]]
    assert held["holders"][0]["expires_at"] == a["expires_at"], "not extended either"
    assert (await http.post("/v1/locks/route-a/release", json={"lease_id": a["lease_id"]})).status_code == 200
    # an ended lease of another lock is not "already released" here either
    assert_error(
        await http.post("/v1/locks/route-b/release", json={"lease_id": a["lease_id"]}), 409, "LOCK_NOT_HELD"
    )


async def test_correlation_ids_reach_the_events(http: httpx.AsyncClient, module_dsn: str) -> None:
    lease = (await acquire(http, "corr", ttl=10, correlation_id="http-1")).json()
    body = {"lease_id": lease["lease_id"], "ttl": 20, "correlation_id": "http-2"}
    assert (await http.post("/v1/locks/corr/extend", json=body)).status_code == 200
    body = {"lease_id": lease["lease_id"], "correlation_id": "http-3"}
    assert (await http.post("/v1/locks/corr/release", json=body)).status_code == 200
    conn = await asyncpg.connect(module_dsn)
    try:
        rows = await conn.fetch(
            f"SELECT event_type, correlation_id FROM {SCHEMA}.events WHERE lock_name = 'corr' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [(r["event_type"], r["correlation_id"]) for r in rows] == [
        ("lock_acquired", "http-1"),
        ("lock_extended", "http-2"),
        ("lock_released", "http-3"),
    ]


async def test_shared_holders_and_semaphores(http: httpx.AsyncClient) -> None:
    for owner in ("r1", "r2"):
        assert (await acquire(http, "rw", owner, mode="shared")).status_code == 200
    assert_error(await acquire(http, "rw", "w"), 409, "LOCK_HELD_BY_OTHER")
    for owner in ("s1", "s2"):
        assert (await acquire(http, "sem", owner, permits=2)).status_code == 200
    assert_error(await acquire(http, "sem", "s3", permits=2), 409, "LOCK_HELD_BY_OTHER")


async def test_client_lease_id_makes_retries_idempotent(http: httpx.AsyncClient) -> None:
    mine = str(uuid.uuid4())
    first = await acquire(http, "idem", lease_id=mine)
    retry = await acquire(http, "idem", lease_id=mine)
    assert first.status_code == retry.status_code == 200
    assert first.json()["lease_id"] == retry.json()["lease_id"] == mine
    assert first.json()["token"] == retry.json()["token"]
    # the same id for another lock is refused, and shows nothing of the first lease
    other = assert_error(await acquire(http, "idem-other", lease_id=mine), 422, "VALIDATION_ERROR")
    assert mine not in str(other)


async def test_every_error_code_with_status_and_body(http: httpx.AsyncClient) -> None:
    held = (await acquire(http, "e-held", "holder", ttl=30)).json()
    body = assert_error(await acquire(http, "e-held", "other"), 409, "LOCK_HELD_BY_OTHER")
    assert body["details"]["holders"] == ["holder"]
    assert held["lease_id"] not in str(body)

    assert_error(await acquire(http, "e-held", "other", wait=0.3), 409, "LOCK_TIMEOUT")
    assert_error(await http.get("/v1/locks/never-used"), 404, "LOCK_NOT_FOUND")
    assert_error(
        await http.post("/v1/locks/e-held/release", json={"lease_id": str(uuid.uuid4())}),
        409,
        "LOCK_NOT_HELD",
    )
    short = (await acquire(http, "e-exp", ttl=1)).json()
    await asyncio.sleep(1.3)
    assert_error(
        await http.post("/v1/locks/e-exp/extend", json={"lease_id": short["lease_id"]}), 410, "LOCK_EXPIRED"
    )
    assert_error(await acquire(http, "e-val", ttl=0), 422, "VALIDATION_ERROR")

    # deadlock: A holds x and waits for y; B holds y and asks for x
    await acquire(http, "dl-x", "A")
    await acquire(http, "dl-y", "B")
    waiting = asyncio.ensure_future(acquire(http, "dl-y", "A", wait=10))
    await asyncio.sleep(0.5)
    dl = assert_error(await acquire(http, "dl-x", "B", wait=10), 409, "DEADLOCK_DETECTED")
    assert "cycle" in dl["details"]
    waiting.cancel()


async def test_database_error_is_503(module_dsn: str) -> None:
    proxy = await CuttableProxy(module_dsn).start()
    svc = await Service(proxy.dsn).start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            assert (await http.get("/health")).json()["status"] == "healthy"
            proxy.cut()
            down = await http.get("/health")
            assert down.status_code == 503, down.text
            assert down.json()["status"] == "unhealthy" and down.json()["reason"]
            assert_error(await acquire(http, "db-down"), 503, "DATABASE_ERROR")
            proxy.heal()
            for _ in range(100):
                up = await http.get("/health")
                if up.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert up.status_code == 200, up.text
            assert up.json() == {"status": "healthy", "postgres": "connected", "locks": up.json()["locks"]}
            assert (await acquire(http, "db-back")).status_code == 200
    finally:
        await svc.stop()
        await proxy.close()


async def test_starts_before_its_database_and_serves_once_it_answers(module_dsn: str) -> None:
    proxy = await CuttableProxy(module_dsn).start()
    proxy.cut()
    svc = Service(proxy.dsn)
    try:
        await svc.start(healthy=False)
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            down = await http.get("/health")
            assert down.status_code == 503 and down.json()["postgres"] == "unreachable"
            assert_error(await acquire(http, "early"), 503, "DATABASE_ERROR")
            assert (await http.get("/metrics")).status_code == 200
            proxy.heal()
            for _ in range(100):
                if (await http.get("/health")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get("/health")).status_code == 200
            assert (await acquire(http, "early")).status_code == 200
    finally:
        await svc.stop()
        await proxy.close()


BAD_INPUTS: list[tuple[str, str, bytes | None, int, str]] = [
    # (id, path, raw body, status, words the message must contain)
    ("unknown-field", "/v1/locks/bad/acquire", b'{"owner_id": "a", "colour": "red"}', 422, "colour"),
    ("wrong-type-ttl", "/v1/locks/bad/acquire", b'{"owner_id": "a", "ttl": "30"}', 422, "ttl"),
    ("bool-as-number", "/v1/locks/bad/acquire", b'{"owner_id": "a", "wait": true}', 422, "wait"),
    ("owner-not-string", "/v1/locks/bad/acquire", b'{"owner_id": 5}', 422, "owner_id"),
    ("missing-owner", "/v1/locks/bad/acquire", b"{}", 422, "owner_id"),
    ("bad-mode", "/v1/locks/bad/acquire", b'{"owner_id": "a", "mode": "upgrade"}', 422, "mode"),
    ("ttl-range", "/v1/locks/bad/acquire", b'{"owner_id": "a", "ttl": 3601}', 422, "ttl"),
    ("name-300", "/v1/locks/" + "n" * 300 + "/acquire", b'{"owner_id": "a"}', 422, "255"),
    ("owner-300", "/v1/locks/bad/acquire", b'{"owner_id": "' + b"o" * 300 + b'"}', 422, "owner_id"),
    (
        "oversize-metadata",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "metadata": {"x": "' + b"m" * 5000 + b'"}}',
        422,
        "4096",
    ),
    (
        "nul-in-metadata",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "metadata": {"x": "\\u0000"}}',
        422,
        "NUL",
    ),
    ("nul-in-name", "/v1/locks/bad%00name/acquire", b'{"owner_id": "a"}', 422, "NUL"),
    (
        "nan-in-metadata",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "metadata": {"x": NaN}}',
        422,
        "metadata",
    ),
    (
        "infinity-in-metadata",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "metadata": {"x": 1e400}}',
        422,
        "metadata",
    ),
    ("malformed-json", "/v1/locks/bad/acquire", b'{"owner_id": ', 422, "JSON"),
    ("not-an-object", "/v1/locks/bad/acquire", b"[1, 2]", 422, "body"),
    ("empty-body", "/v1/locks/bad/acquire", b"", 422, "body"),
    ("invalid-utf8", "/v1/locks/bad/acquire", b'{"owner_id": "\xff\xfe"}', 400, "UTF-8"),
    ("ten-megabytes", "/v1/locks/bad/acquire", b'{"owner_id": "' + b"a" * 10_000_000 + b'"}', 413, "larger"),
    ("bad-lease-id", "/v1/locks/bad/release", b'{"lease_id": "not-a-uuid"}', 422, "UUID"),
    ("release-extra", "/v1/locks/bad/release", b'{"lease_id": "x", "force": true}', 422, "force"),
    ("extend-ttl-type", "/v1/locks/bad/extend", b'{"lease_id": "x", "ttl": [1]}', 422, "ttl"),
    ("client-lease-id-not-uuid", "/v1/locks/bad/acquire", b'{"owner_id": "a", "lease_id": "1"}', 422, "UUID"),
    (
        "correlation-too-long",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "correlation_id": "' + b"c" * 256 + b'"}',
        422,
        "correlation_id",
    ),
    (
        "correlation-nul",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "correlation_id": "x\\u0000"}',
        422,
        "NUL",
    ),
    (
        "correlation-type",
        "/v1/locks/bad/acquire",
        b'{"owner_id": "a", "correlation_id": 7}',
        422,
        "correlation_id",
    ),
]


@pytest.mark.parametrize(
    ("path", "raw", "status", "words"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_is_a_4xx_and_changes_nothing(
    http: httpx.AsyncClient, module_dsn: str, path: str, raw: bytes, status: int, words: str
) -> None:
    if (await http.get("/v1/locks/bad")).status_code == 404:  # something held, so a change would show
        (await acquire(http, "bad", "keeper", ttl=600)).raise_for_status()
    before = await table_snapshot(module_dsn)
    resp = await http.post(path, content=raw, headers={"content-type": "application/json"})
    after = await table_snapshot(module_dsn)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert words.lower() in body["error_message"].lower() or words.lower() in str(body["details"]).lower(), (
        body
    )
    assert after == before


async def test_bad_query_and_unknown_route_are_4xx(http: httpx.AsyncClient) -> None:
    for param in ("prefix", "owner_id", "after"):
        body = assert_error(await http.get("/v1/locks", params={param: "a\x00b"}), 422, "VALIDATION_ERROR")
        assert "NUL" in body["error_message"]
    assert_error(await http.delete("/v1/locks/x", params={"reason": "\x00"}), 422, "VALIDATION_ERROR")
    # invalid UTF-8 in the URL is refused, not turned into replacement characters
    for url in ("/v1/locks/%ED%A0%80/acquire", "/v1/locks/%FF/acquire"):
        body = assert_error(await http.post(url, json={"owner_id": "x"}), 400, "VALIDATION_ERROR")
        assert "UTF-8" in body["error_message"]
    assert_error(await http.get("/v1/locks?prefix=%FF"), 400, "VALIDATION_ERROR")
    surrogate = await http.post(
        "/v1/locks/s/acquire", content=b'{"owner_id": "x", "metadata": {"k": "\\ud800"}}'
    )
    assert surrogate.status_code == 422, surrogate.text
    assert_error(await http.get("/v1/locks", params={"limit": "0"}), 422, "VALIDATION_ERROR")
    assert_error(await http.get("/v1/locks", params={"limit": "many"}), 422, "VALIDATION_ERROR")
    resp = await http.get("/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error_code"] == "NOT_FOUND"
    resp = await http.put("/v1/locks/x/acquire", json={})
    assert resp.status_code == 405 and "error_message" in resp.json()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_parse_and_counters_move(http: httpx.AsyncClient) -> None:
    before = _samples((await http.get("/metrics")).text)
    lease = (await acquire(http, "m1", ttl=30)).json()
    await acquire(http, "m1", "other")
    await http.post("/v1/locks/m1/extend", json={"lease_id": lease["lease_id"]})
    held_metrics = _samples((await http.get("/metrics")).text)
    await http.post("/v1/locks/m1/release", json={"lease_id": lease["lease_id"]})
    after = _samples((await http.get("/metrics")).text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("distributed_lock_acquires_total", result="granted") == 1
    assert delta("distributed_lock_acquires_total", result="lock_held_by_other") == 1
    assert delta("distributed_lock_extends_total") == 1
    assert delta("distributed_lock_releases_total") == 1
    assert delta("distributed_lock_acquire_duration_seconds_count") == 2
    assert delta("distributed_lock_release_duration_seconds_count") == 1
    assert held_metrics[("distributed_lock_active_locks", ())] >= 1
    for name in (
        "distributed_lock_waiters",
        "distributed_lock_db_pool_size",
        "distributed_lock_db_pool_idle",
        "distributed_lock_db_pool_max",
        "distributed_lock_expired_total",
        "distributed_lock_deadlocks_total",
    ):
        assert any(k[0] == name for k in after), name


async def test_long_poll_is_woken_by_release(http: httpx.AsyncClient) -> None:
    lease = (await acquire(http, "lp", "first", ttl=30)).json()
    waiter = asyncio.ensure_future(acquire(http, "lp", "second", wait=20))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    info = (await http.get("/v1/locks/lp")).json()
    assert [w["owner_id"] for w in info["waiters"]] == ["second"]
    released = asyncio.get_running_loop().time()
    await http.post("/v1/locks/lp/release", json={"lease_id": lease["lease_id"]})
    got = await asyncio.wait_for(waiter, 10)
    assert got.status_code == 200 and got.json()["owner_id"] == "second"
    assert asyncio.get_running_loop().time() - released < 1.0


async def test_hung_up_long_poll_leaves_the_queue(http: httpx.AsyncClient, service: Service) -> None:
    (await acquire(http, "hang", "first", ttl=30)).raise_for_status()
    async with httpx.AsyncClient(base_url=service.url) as other:
        with pytest.raises(httpx.ReadTimeout):
            await other.post("/v1/locks/hang/acquire", json={"owner_id": "gone", "wait": 30}, timeout=0.5)
    for _ in range(50):
        if not (await http.get("/v1/locks/hang")).json()["waiters"]:
            break
        await asyncio.sleep(0.1)
    assert (await http.get("/v1/locks/hang")).json()["waiters"] == []


async def test_lease_ids_never_listed_nor_logged(http: httpx.AsyncClient, service: Service) -> None:
    lease = (await acquire(http, "secret", ttl=30, metadata={"who": "me"})).json()
    secret = lease["lease_id"]
    pages = [
        (await http.get("/v1/locks/secret")).text,
        (await http.get("/v1/locks")).text,
        (await http.get("/locks")).text,
        (await http.get("/metrics")).text,
    ]
    async with http.stream("GET", "/dashboard/stream") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                pages.append(line)
                break
    assert "secret" in pages[-1]
    for page in pages:
        assert secret not in page
    await http.post("/v1/locks/secret/release", json={"lease_id": secret})
    assert secret not in service.output()


async def test_listing_filters_and_paging(http: httpx.AsyncClient) -> None:
    for i in range(5):
        await acquire(http, f"page:{i}", f"o{i}", ttl=30)
    first = (await http.get("/v1/locks", params={"prefix": "page:", "limit": 2})).json()
    assert [x["name"] for x in first["locks"]] == ["page:0", "page:1"]
    rest = (await http.get("/v1/locks", params={"prefix": "page:", "after": first["next_after"]})).json()
    assert [x["name"] for x in rest["locks"]] == ["page:2", "page:3", "page:4"]
    mine = (await http.get("/v1/locks", params={"owner_id": "o3"})).json()["locks"]
    assert [x["name"] for x in mine] == ["page:3"]


async def test_openapi_documents_the_routes(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    for path in (
        "/v1/locks/{name}/acquire",
        "/v1/locks/{name}/release",
        "/v1/locks/{name}/extend",
        "/v1/locks/{name}",
        "/v1/locks",
        "/health",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert (await http.get("/docs")).status_code == 200
