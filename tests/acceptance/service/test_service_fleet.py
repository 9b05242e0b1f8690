"""Several service processes on one database, bearer-token auth, and the bind rules."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import httpx
import pytest
from svc_helpers import CLI, Service, clean_env, free_port

from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockValidationError
from omninode_bridge.service.server import check_bind

pytestmark = pytest.mark.integration


async def test_three_instances_share_one_truth(module_dsn: str) -> None:
    services = await asyncio.gather(*(Service(module_dsn).start() for _ in range(3)))
    try:
        clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in services]
        a, b, c = clients
        lease = (await a.post("/v1/locks/fleet/acquire", json={"owner_id": "via-a", "ttl": 30})).json()
        for other in (b, c):
            resp = await other.post("/v1/locks/fleet/acquire", json={"owner_id": "elsewhere"})
            assert resp.status_code == 409 and resp.json()["error_code"] == "LOCK_HELD_BY_OTHER"
        # a long poll on C is woken by a release through B
        waiter = asyncio.ensure_future(
            c.post("/v1/locks/fleet/acquire", json={"owner_id": "via-c", "wait": 20})
        )
        for _ in range(100):
            if (await a.get("/v1/locks/fleet")).json()["waiters"]:
                break
            await asyncio.sleep(0.02)
        released = time.perf_counter()
        rel = await b.post("/v1/locks/fleet/release", json={"lease_id": lease["lease_id"]})
        assert rel.status_code == 200
        got = await asyncio.wait_for(waiter, 10)
        handoff_ms = (time.perf_counter() - released) * 1000
        assert got.status_code == 200 and got.json()["owner_id"] == "via-c"
        assert got.json()["token"] > lease["token"]
        # "within milliseconds": generous for a shared 2-core machine, far below any poll period
        assert handoff_ms < 250, handoff_ms
        for http in clients:
            await http.aclose()
    finally:
        await asyncio.gather(*(s.stop() for s in services))


async def test_bearer_tokens_client_and_admin_roles(module_dsn: str) -> None:
    svc = await Service(module_dsn, OMNINODE_CLIENT_TOKENS="c-token", OMNINODE_ADMIN_TOKENS="a-token").start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            none = await http.post("/v1/locks/auth/acquire", json={"owner_id": "x"})
            assert none.status_code == 401 and none.json()["error_code"] == "UNAUTHORIZED"
            assert none.headers["www-authenticate"] == "Bearer"
            wrong = await http.get("/v1/locks", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHORIZED"
            client = {"Authorization": "Bearer c-token"}
            admin = {"Authorization": "Bearer a-token"}
            ok = await http.post("/v1/locks/auth/acquire", json={"owner_id": "x"}, headers=client)
            assert ok.status_code == 200
            forbidden = await http.delete("/v1/locks/auth", headers=client)
            assert forbidden.status_code == 403 and forbidden.json()["error_code"] == "FORBIDDEN"
            assert (await http.get("/v1/locks/auth", headers=client)).json()["held"] is True
            freed = await http.delete("/v1/locks/auth", params={"reason": "test"}, headers=admin)
            assert freed.status_code == 200 and freed.json()["released"] == 1
            assert (await http.get("/v1/locks/auth", headers=admin)).json()["held"] is False
            assert (await http.get("/dashboard/stream", headers={})).status_code == 401
            assert (await http.get("/health")).status_code == 200
        assert "c-token" not in svc.output() and "a-token" not in svc.output()
    finally:
        await svc.stop()


def test_bind_rules_without_tokens() -> None:
    open_cfg = LockSettings()
    assert "WARNING" in (check_bind(open_cfg, "127.0.0.1") or "")
    with pytest.raises(LockValidationError, match="refusing"):
        check_bind(open_cfg, "0.0.0.0")
    assert "NO AUTHENTICATION" in (check_bind(open_cfg, "0.0.0.0", allow_public_without_auth=True) or "")
    assert check_bind(LockSettings(client_tokens=("t",)), "0.0.0.0") is None


async def test_serve_refuses_a_public_bind_without_tokens(module_dsn: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--dsn",
        module_dsn,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert b"refusing to listen on 0.0.0.0" in err


async def test_loopback_without_tokens_warns_loudly(service: Service) -> None:
    assert "no auth tokens configured" in service.output()


async def test_demo_load_of_make_run_moves_the_dashboard(module_dsn: str) -> None:
    """``make run`` is ``serve --demo-load``: it prints where things are and makes traffic."""
    svc = await Service(module_dsn, args=("--demo-load",)).start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            granted = 0.0
            for _ in range(100):
                metrics = (await http.get("/metrics")).text
                line = next(
                    (
                        x
                        for x in metrics.splitlines()
                        if x.startswith('distributed_lock_acquires_total{result="granted"}')
                    ),
                    None,
                )
                granted = float(line.split()[-1]) if line else 0.0
                if granted >= 3:
                    break
                await asyncio.sleep(0.2)
            assert granted >= 3
        out = svc.output()
        for url in (f"{svc.url}/", f"{svc.url}/docs", f"{svc.url}/metrics"):
            assert url in out, out
    finally:
        await svc.stop()


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(300):
            assert proc.returncode is None, "the server exited"
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("never healthy")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            (sys.executable, "-m", "omninode_bridge.nodes.distributed_lock_effect.v1_0_0.node"),
            id="node-module",
        ),
        pytest.param((CLI, "serve", "--workers", "2"), id="serve-two-workers"),
    ],
)
async def test_other_ways_to_serve(module_dsn: str, argv: tuple[str, ...]) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *argv, "--port", str(port),
        env=clean_env(OMNINODE_POSTGRES_DSN=module_dsn, OMNINODE_CLEANUP_INTERVAL="3600"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_healthy(url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            name = f"served-{port}"
            ok = await http.post(f"/v1/locks/{name}/acquire", json={"owner_id": "one"})
            assert ok.status_code == 200, ok.text
            for _ in range(4):  # with two workers, requests land on either; all agree
                busy = await http.post(f"/v1/locks/{name}/acquire", json={"owner_id": "two"})
                assert busy.status_code == 409
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
