"""``omninode-lock run NAME -- COMMAND`` (flock(1) for a fleet) and the lock commands."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from svc_helpers import CLI, clean_env

from omninode_bridge.locks import LockClient, LockSettings

pytestmark = pytest.mark.integration


async def cli(*args: str, limit_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env()
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_returns_the_command_exit_code(module_dsn: str) -> None:
    code, _, err = await cli("--dsn", module_dsn, "run", "job:a", "--", "sh", "-c", "exit 7")
    assert code == 7, err
    code, out, err = await cli("--dsn", module_dsn, "run", "job:a", "--", "echo", "hello")
    assert code == 0 and out.strip() == "hello", err


async def test_run_exits_75_when_busy_and_queues_with_wait(module_dsn: str, settings: LockSettings) -> None:
    async with LockClient.connect(module_dsn, settings=settings, cleanup=False) as locks:
        lease = await locks.acquire("job:busy", "holder", ttl=30)
        code, _, err = await cli("--dsn", module_dsn, "run", "job:busy", "--", "true")
        assert code == 75 and "busy" in err
        waiting = asyncio.ensure_future(
            cli("--dsn", module_dsn, "run", "--wait", "20", "job:busy", "--", "sh", "-c", "exit 3")
        )
        await asyncio.sleep(1.5)
        assert not waiting.done()
        await locks.release(lease)
        code, _, err = await waiting
        assert code == 3, err


async def test_run_stops_the_command_when_the_lease_is_force_released(
    module_dsn: str, settings: LockSettings
) -> None:
    started = time.monotonic()
    running = asyncio.ensure_future(
        cli(
            "--dsn",
            module_dsn,
            "run",
            "--ttl",
            "3",
            "--kill-after",
            "1",
            "job:long",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 60",
        )
    )
    async with LockClient.connect(module_dsn, settings=settings, cleanup=False) as locks:
        for _ in range(100):
            if await locks.list_locks(prefix="job:long"):
                break
            await asyncio.sleep(0.1)
        assert await locks.force_release("job:long", "test: take it away") == 1
        code, _, err = await asyncio.wait_for(running, 30)
    assert code == 70, err
    assert "lost" in err
    # TERM was ignored, so SIGKILL followed after --kill-after; far sooner than the 60 s sleep
    assert time.monotonic() - started < 20


async def test_lock_commands_round_trip_with_json(module_dsn: str) -> None:
    code, out, err = await cli(
        "--dsn", module_dsn, "acquire", "cli:x", "--owner", "me", "--ttl", "30", "--json"
    )
    assert code == 0, err
    lease = json.loads(out)
    code, out, _ = await cli("--dsn", module_dsn, "info", "cli:x", "--json")
    info = json.loads(out)
    assert info["held"] and info["holders"][0]["owner_id"] == "me" and lease["lease_id"] not in out
    code, out, _ = await cli("--dsn", module_dsn, "list", "--prefix", "cli:", "--json")
    assert [r["name"] for r in json.loads(out)] == ["cli:x"]
    code, out, _ = await cli("--dsn", module_dsn, "status", "--prefix", "cli:", "--json")
    status = json.loads(out)
    assert code == 0 and status["counts"]["active_locks"] >= 1 and status["locks"][0]["owners"] == ["me"]
    code, out, _ = await cli("--dsn", module_dsn, "extend", lease["lease_id"], "--ttl", "60", "--json")
    assert code == 0 and json.loads(out)["ttl"] == 60
    code, out, _ = await cli("--dsn", module_dsn, "events", "--lock", "cli:x", "--json")
    assert code == 0 and '"lock_acquired"' in out and lease["lease_id"] not in out
    code, out, _ = await cli("--dsn", module_dsn, "release", lease["lease_id"])
    assert code == 0 and out.strip() == "released"
    code, out, _ = await cli("--dsn", module_dsn, "cleanup")
    assert code == 0 and "cleaned" in out
    code, out, _ = await cli("--version")
    assert code == 0 and "0.1.0" in out
