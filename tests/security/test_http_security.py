"""Security of the HTTP service (issue 11), against a real ``omninode-lock serve`` with a
client and an admin token, DEBUG logging everywhere and a DSN with a password.

The routes are enumerated from the application itself: a route added later without an
auth check fails ``test_every_route_but_the_public_ones_needs_a_token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import typing
import uuid
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from pydantic import BaseModel, ValidationError
from sec_helpers import SecureService
from starlette.routing import Route
from svc_helpers import SCHEMA, table_snapshot

from omninode_bridge.events.envelope import encode, envelope_from_row
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.service.app import create_app

pytestmark = pytest.mark.integration

# GET pages that anyone may read: probes, the API description, and the dashboard's
# static page (its data comes from /dashboard/stream, which needs a token)
PUBLIC = {
    "/health",
    "/metrics",
    "/",
    "/dashboard",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
PROBE_BODIES: tuple[dict[str, Any], ...] = (
    {"owner_id": "probe"},
    {"lease_id": str(uuid.uuid4())},
    {"lease_id": str(uuid.uuid4()), "ttl": 5},
)
SQLISH_NAMES = (
    "x'); DROP TABLE omninode_locks.leases; --",
    '"; DELETE FROM omninode_locks.locks; --',
    "' OR '1'='1",
    "%",
    "_",
    "a\\b",
    "$1::text",
    "name; SELECT pg_sleep(5)",
)
SQLISH_METADATA = {
    "q": "'); TRUNCATE omninode_locks.events; --",
    "k'\"; --": ["$$", "%s", "{}", "\\"],
    "nested": {"DROP TABLE": "omninode_locks.locks"},
}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _walk(routes: list[Any], prefix: str = "") -> list[tuple[str, Route]]:
    """Every endpoint route with its full path; routers that FastAPI includes lazily
    (``_IncludedRouter``) are opened, so nothing mounted is missed."""
    out: list[tuple[str, Route]] = []
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            context = getattr(route, "include_context", None)
            out += _walk(router.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Route) and route.methods is not None:
            out.append((prefix + route.path, route))
        else:
            raise AssertionError(f"a route this test cannot enumerate: {route!r}")
    return out


def _routes() -> list[tuple[str, str, Route]]:
    """(method, path with parameters filled, route) for every route of the real app."""
    out = []
    for full_path, route in _walk(create_app(LockSettings()).routes):
        path = re.sub(r"\{[^}]+\}", "sec-probe", full_path)
        assert route.methods is not None
        out += [(m, path, route) for m in sorted(route.methods - {"HEAD"})]
    return out


def _body_for(route: Route) -> dict[str, Any] | None:
    """A body that the route's model accepts, so that only the credentials are wrong."""
    hints = typing.get_type_hints(route.endpoint)
    models = [t for t in hints.values() if isinstance(t, type) and issubclass(t, BaseModel)]
    if not models:
        return None
    for candidate in PROBE_BODIES:
        with contextlib.suppress(ValidationError):
            models[0].model_validate(candidate)
            return candidate
    raise AssertionError(f"no probe body fits {route.path}: add one to PROBE_BODIES")


ROUTES = _routes()
GUARDED = [(m, p, r) for m, p, r in ROUTES if not (m == "GET" and p in PUBLIC)]


def test_the_route_table_is_what_we_think() -> None:
    """Mutating routes are never public, and the enumeration found the API."""
    assert {p for m, p, _ in GUARDED if m != "GET"} >= {
        "/v1/locks/sec-probe/acquire",
        "/v1/locks/sec-probe/release",
        "/v1/locks/sec-probe/extend",
        "/v1/locks/sec-probe",
        "/v1/cleanup",
    }
    assert all(m == "GET" for m, p, _ in ROUTES if p in PUBLIC)


async def test_every_route_but_the_public_ones_needs_a_token(secure: SecureService, sec_dsn: str) -> None:
    before = await table_snapshot(sec_dsn)
    bad_credentials = (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {secure.client_token}"},
    )
    async with httpx.AsyncClient(base_url=secure.url, timeout=30) as http:
        for method, path, route in GUARDED:
            body = _body_for(route)
            for headers in bad_credentials:
                r = await http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, f"{method} {path} with {headers or 'no token'}: {r.status_code}"
                assert r.json()["error_code"] == "UNAUTHORIZED"
    assert await table_snapshot(sec_dsn) == before, "a refused request changed the lock tables"


async def test_client_token_cannot_force_release_or_clean_up_but_admin_can(secure: SecureService) -> None:
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        held = await http.post("/v1/locks/sec-admin/acquire", json={"owner_id": "a", "ttl": 30})
        assert held.status_code == 200
        for method, path in (("DELETE", "/v1/locks/sec-admin"), ("POST", "/v1/cleanup")):
            r = await http.request(method, path)
            assert r.status_code == 403 and r.json()["error_code"] == "FORBIDDEN"
        assert len((await http.get("/v1/locks/sec-admin")).json()["holders"]) == 1
        r = await http.delete("/v1/locks/sec-admin", headers=secure.headers("admin"))
        assert r.status_code == 200 and r.json()["released"] == 1
        assert (await http.post("/v1/cleanup", headers=secure.headers("admin"))).status_code == 200


async def test_release_and_extend_need_the_lease_id_not_the_owner_id(secure: SecureService) -> None:
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        lease = (await http.post("/v1/locks/sec-own/acquire", json={"owner_id": "alice", "ttl": 30})).json()
        for action in ("release", "extend"):
            for body in ({"owner_id": "alice"}, {"owner_id": "alice", "lease_id": str(uuid.uuid4())}):
                r = await http.post(f"/v1/locks/sec-own/{action}", json=body)
                assert r.status_code == 422, f"{action} with {body}: {r.status_code}"
            r = await http.post(f"/v1/locks/sec-own/{action}", json={"lease_id": str(uuid.uuid4())})
            assert r.status_code == 409 and r.json()["error_code"] == "LOCK_NOT_HELD"
        # the same owner id without the lease id is just another owner
        assert (await http.post("/v1/locks/sec-own/acquire", json={"owner_id": "alice"})).status_code == 409
        holders = (await http.get("/v1/locks/sec-own")).json()["holders"]
        assert [(h["owner_id"], h["token"]) for h in holders] == [("alice", lease["token"])]
        assert (
            await http.post("/v1/locks/sec-own/release", json={"lease_id": lease["lease_id"]})
        ).status_code == 200


async def test_a_reentrant_acquire_by_owner_id_does_not_reveal_the_lease_id(secure: SecureService) -> None:
    """Owner ids are public (listings show them); a reentrant acquire naming one must not
    hand out that owner's lease id, which would let anyone release or extend its lease.
    Re-entry over HTTP needs the lease id itself (proof of possession)."""
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        mine = str(uuid.uuid4())
        body = {"owner_id": "bob", "ttl": 30, "reentrant": True, "lease_id": mine}
        lease = (await http.post("/v1/locks/sec-reent/acquire", json=body)).json()
        assert lease["lease_id"] == mine
        owners = (await http.get("/v1/locks", params={"prefix": "sec-reent"})).json()["locks"][0]["owners"]
        as_owner = {"owner_id": owners[0], "ttl": 30, "reentrant": True}
        try:
            no_proof = await http.post("/v1/locks/sec-reent/acquire", json=as_owner)
            assert no_proof.status_code == 422 and "lease_id" in no_proof.json()["error_message"]
            guessed = await http.post(
                "/v1/locks/sec-reent/acquire", json={**as_owner, "lease_id": str(uuid.uuid4())}
            )
            assert guessed.status_code == 409, guessed.text
            for refused in (no_proof, guessed):
                assert mine not in refused.text
            again = await http.post("/v1/locks/sec-reent/acquire", json=body)  # the holder, with proof
            assert again.status_code == 200 and again.json()["lease_id"] == mine
        finally:
            for _ in range(2):
                await http.post("/v1/locks/sec-reent/release", json={"lease_id": mine})


async def test_a_refused_permits_mismatch_touches_nothing(secure: SecureService, sec_dsn: str) -> None:
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        assert (
            await http.post("/v1/locks/sec-perm/acquire", json={"owner_id": "a", "ttl": 30})
        ).status_code == 200
        before = await table_snapshot(sec_dsn)
        r = await http.post("/v1/locks/sec-perm/acquire", json={"owner_id": "b", "permits": 3})
        assert r.status_code == 422 and "permits" in r.json()["error_message"]
        assert await table_snapshot(sec_dsn) == before


async def test_sql_looking_names_and_metadata_are_inert(secure: SecureService, sec_dsn: str) -> None:
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        leases = {}
        for name in SQLISH_NAMES:
            path = f"/v1/locks/{quote(name, safe='')}"
            r = await http.post(
                f"{path}/acquire", json={"owner_id": name, "ttl": 30, "metadata": SQLISH_METADATA}
            )
            assert r.status_code == 200, (name, r.text)
            leases[name] = r.json()
            assert (leases[name]["lock_name"], leases[name]["metadata"]) == (name, SQLISH_METADATA)
            info = (await http.get(path)).json()
            assert info["name"] == name and info["holders"][0]["metadata"] == SQLISH_METADATA
            assert info["holders"][0]["owner_id"] == name
            listed = (await http.get("/v1/locks", params={"prefix": name})).json()["locks"]
            assert [x["name"] for x in listed if x["name"].startswith(name)] == [x["name"] for x in listed]
            assert name in [x["name"] for x in listed]
        owner_filter = (await http.get("/v1/locks", params={"owner_id": "' OR '1'='1"})).json()["locks"]
        assert [x["name"] for x in owner_filter] == ["' OR '1'='1"]
        conn = await asyncpg.connect(sec_dsn)
        try:
            for table in ("locks", "leases", "waiters", "events", "fences", "schema_migrations"):
                assert await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.{table}") is not None, table
            stored = await conn.fetch(
                f"SELECT name, metadata::text FROM {SCHEMA}.leases WHERE name = ANY($1)", list(SQLISH_NAMES)
            )
            assert {r["name"] for r in stored} == set(SQLISH_NAMES)
            assert all(json.loads(r["metadata"]) == SQLISH_METADATA for r in stored)
        finally:
            await conn.close()
        for name, lease in leases.items():
            r = await http.post(
                f"/v1/locks/{quote(name, safe='')}/release", json={"lease_id": lease["lease_id"]}
            )
            assert r.status_code == 200


async def _sse_text(
    http: httpx.AsyncClient, path: str, until: str, headers: dict[str, str] | None = None
) -> str:
    """What an SSE endpoint sends until ``until`` appears (or 5 s pass)."""
    seen = ""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5), http.stream("GET", path, headers=headers) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_text():
                seen += chunk
                if until in seen:
                    break
    return seen


async def test_lease_ids_never_leave_except_to_their_holder(secure: SecureService, sec_dsn: str) -> None:
    """Listings, info, /locks, events (JSON and SSE), the dashboard and its stream, Kafka
    envelopes built from the outbox, metrics and logs: no lease id anywhere."""
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        ids = []
        w = await http.post(
            "/v1/locks/sec-leak/acquire", json={"owner_id": "w", "ttl": 30, "metadata": {"m": 1}}
        )
        ids.append(w.json()["lease_id"])
        for i in range(2):
            r = await http.post(
                "/v1/locks/sec-leak-r/acquire", json={"owner_id": f"r{i}", "mode": "shared", "ttl": 30}
            )
            ids.append(r.json()["lease_id"])
        waiter = asyncio.ensure_future(
            http.post("/v1/locks/sec-leak/acquire", json={"owner_id": "q", "ttl": 30, "wait": 10})
        )
        await asyncio.sleep(0.3)
        ext = await http.post("/v1/locks/sec-leak/extend", json={"lease_id": ids[0], "ttl": 40})
        assert ext.status_code == 200
        assert (await http.post("/v1/locks/sec-leak/release", json={"lease_id": ids[0]})).status_code == 200
        granted = await waiter
        ids.append(granted.json()["lease_id"])
        seen = {
            "list": (await http.get("/v1/locks")).text,
            "info": (await http.get("/v1/locks/sec-leak")).text
            + (await http.get("/v1/locks/sec-leak-r")).text,
            "operators": (await http.get("/locks")).text,
            "events": (await http.get("/v1/events", params={"after": 0, "limit": 1000})).text,
            "events-sse": await _sse_text(http, "/v1/events/stream?after=0", "lock_released"),
            "events-accept-sse": await _sse_text(
                http, "/v1/events?after=0", "lock_released", headers={"Accept": "text/event-stream"}
            ),
            "dashboard": (await http.get("/dashboard")).text,
            "dashboard-sse": await _sse_text(http, "/dashboard/stream", "sec-leak"),
            "metrics": (await http.get("/metrics")).text,
            "health": (await http.get("/health")).text,
        }
        assert "lock_released" in seen["events"] and "sec-leak" in seen["dashboard-sse"]
        for rid in ids[1:]:
            await http.post("/v1/locks/sec-leak-r/release", json={"lease_id": rid})
    conn = await asyncpg.connect(sec_dsn)
    try:
        rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.events WHERE lock_name LIKE 'sec-leak%'")
    finally:
        await conn.close()
    assert {str(r["lease_id"]) for r in rows} >= set(ids), (
        "the outbox should hold the ids (they must not leave it)"
    )
    seen["kafka"] = "\n".join(encode(envelope_from_row(r, uuid.uuid4())).decode() for r in rows)
    seen["logs"] = secure.output()
    for where, text in seen.items():
        leaked = [i for i in ids if i in text]
        assert leaked == [], f"lease ids in {where}"


async def test_body_size_limit_is_a_413_json(secure: SecureService) -> None:
    huge = {"owner_id": "big", "metadata": {"blob": "x" * 200_000}}
    async with httpx.AsyncClient(base_url=secure.url, timeout=30, headers=secure.headers()) as http:
        r = await http.post("/v1/locks/sec-big/acquire", json=huge)
        assert r.status_code == 413 and r.json()["error_code"] == "VALIDATION_ERROR"

        async def chunks() -> typing.AsyncIterator[bytes]:
            for _ in range(200):
                yield b"x" * 1024

        r = await http.post("/v1/locks/sec-big/acquire", content=chunks())
        assert r.status_code == 413 and "larger than" in r.json()["error_message"]
        assert (await http.get("/v1/locks/sec-big")).status_code == 404


async def test_no_secret_in_any_log_line_of_a_full_run(secure: SecureService) -> None:
    """Every route, good and bad, at DEBUG; then the password and both tokens are looked
    for in every line the process wrote (runs last: the module's other tests add to it)."""
    async with httpx.AsyncClient(base_url=secure.url, timeout=30) as http:
        for method, path, route in ROUTES:
            body = _body_for(route)
            for headers in ({}, secure.headers(), secure.headers("admin"), {"Authorization": "Bearer wrong"}):
                if "stream" in path or (path == "/v1/events" and headers):
                    continue  # streams are read by the lease-id test; a long poll is not needed here
                await http.request(method, path, json=body, headers=headers)
        admin = secure.headers("admin")
        lease = (
            await http.post("/v1/locks/sec-log/acquire", json={"owner_id": "l", "ttl": 30}, headers=admin)
        ).json()
        await http.post("/v1/locks/sec-log/acquire", json={"owner_id": "m", "ttl": 30}, headers=admin)  # 409
        await http.post("/v1/locks/sec-log/acquire", json={"owner_id": "m", "ttl": 0}, headers=admin)  # 422
        await http.post(
            "/v1/locks/sec-log/extend", json={"lease_id": lease["lease_id"], "ttl": 30}, headers=admin
        )
        await http.post("/v1/locks/sec-log/release", json={"lease_id": lease["lease_id"]}, headers=admin)
        await http.post(
            "/v1/locks/sec-log/extend", json={"lease_id": lease["lease_id"]}, headers=admin
        )  # 409
        await http.get("/v1/locks/never-used", headers=admin)  # 404
        await http.get("/v1/events", params={"after": 0}, headers=admin)
    await secure.stop()  # shutdown lines too
    output = secure.output()
    # the root logger was at DEBUG (sec_helpers.DEBUG_CLI): whatever any library logs is here
    assert "/v1/locks/sec-log/acquire" in output and "lock service ready" in output, (
        "the run's log is missing"
    )
    for secret in (secure.password, secure.client_token, secure.admin_token):
        lines = [line for line in output.splitlines() if secret in line]
        assert lines == [], f"a secret reached the log: {lines[:3]}"
