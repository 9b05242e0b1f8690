"""``omninode-lock`` as a user runs it: a real subprocess against a real database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from omninode_bridge.locks import LockClient, LockSettings

CLI = str(Path(sys.executable).with_name("omninode-lock"))
SCHEMA = "omninode_locks"


def _env() -> dict[str, str]:
    """The caller's environment without any database configuration (so only --dsn counts)."""
    drop = ("OMNINODE_", "POSTGRES_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["COLUMNS"] = "200"
    return env


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def cli(*args: str, limit_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_is_idempotent_and_reports_versions(server_dsn: str) -> None:
    name = f"omninode_cli_{os.getpid()}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(server_dsn, name)
        code, out, err = await cli("--dsn", dsn, "migrate")
        assert code == 0, err
        assert "applied migrations 0001" in out
        code, out, err = await cli("migrate", "--dsn", dsn)
        assert code == 0, err
        assert "up to date" in out
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_status_force_release_and_events(dsn: str, locks: LockClient) -> None:
    code, out, _ = await cli("--dsn", dsn, "status")
    assert code == 0
    assert "active locks: 0" in out
    assert "no locks are held" in out

    lease = await locks.acquire("reports:nightly", "owner-a", ttl=60)
    code, out, _ = await cli("--dsn", dsn, "status")
    assert code == 0
    assert "active locks: 1" in out
    assert "reports:nightly" in out
    assert "owner-a" in out

    code, out, err = await cli("--dsn", dsn, "force-release", "reports:nightly", "--reason", "stuck job")
    assert code == 0, err
    assert "force-released 1 lease(s)" in out
    info = await locks.get_lock_info("reports:nightly")
    assert not info.held
    assert info.last_token == lease.token

    code, out, _ = await cli("--dsn", dsn, "events", "--lock", "reports:nightly", "--json")
    assert code == 0
    assert '"event_type": "lock_force_released"' in out
    assert "stuck job" in out


async def test_force_release_of_unknown_lock_is_one_line_error(dsn: str) -> None:
    code, out, err = await cli("--dsn", dsn, "force-release", "no:such", "--reason", "x")
    assert code != 0
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "LOCK_NOT_FOUND" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "bad",
    [
        "postgresql://bob:s3cretPW@127.0.0.1:1/nope",  # nothing listens there
        "postgresql://bob:s3cretPW@127.0.0.1:notaport/nope",  # malformed
    ],
)
async def test_bad_dsn_is_one_clear_line_without_the_password(bad: str) -> None:
    code, out, err = await cli("--dsn", bad, "status", limit_s=30)
    assert code != 0
    assert "s3cretPW" not in out + err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("omninode-lock: error:")


async def test_demo_runs_workers_and_reports_no_violations(dsn: str) -> None:
    code, out, err = await cli("demo", "--seconds", "3", "--workers", "3", "--dsn", dsn, limit_s=90)
    assert code == 0, out + err
    assert "invariants held: no violations" in out
    assert "VIOLATION" not in out
    for name in ("reports:nightly", "cache:config", "pool:gpu"):
        assert name in out
    assert "GRANT" in out
    # the three locks really were used by several processes
    async with LockClient.connect(
        dsn, settings=LockSettings(schema=SCHEMA, pool_min=1, pool_max=1), cleanup=False
    ) as client:
        events = await client.recent_events("reports:nightly", 500)
    owners = {e["owner_id"] for e in events if e["event_type"] == "lock_acquired"}
    assert len(owners) >= 2


class _Events(list[dict[str, object]]):
    def put(self, item: dict[str, object]) -> None:
        self.append(item)


async def test_demo_invariant_check_catches_a_stale_writer(dsn: str, locks: LockClient) -> None:
    """The demo's guard is real: a write with an older fencing token is reported."""
    from omninode_bridge.demos import contention as demo

    settings = LockSettings(dsn=dsn, schema=SCHEMA)
    await demo._prepare(dsn, settings, "stale")
    args = demo.WorkerArgs(1, dsn, SCHEMA, "stale", 0.0, 0.0, 1)
    lock = demo.BY_NAME["reports:nightly"]
    events = _Events()
    conn = await asyncpg.connect(dsn)
    try:
        base = {"worker": 1, "lock": lock.name, "mode": "exclusive"}
        await demo._enter(locks, conn, args, events, base, lock, 10, 0, 1)
        assert events == []
        await demo._enter(locks, conn, args, events, base, lock, 7, 0, 1)  # stale and a 2nd holder
    finally:
        await conn.close()
    problems = [str(e["problem"]) for e in events]
    assert any("2 exclusive holders" in p for p in problems)
    assert any("rejected as stale" in p for p in problems)


def _postmaster_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_no_database_configured_starts_reuses_and_stops_an_embedded_server(tmp_path: Path) -> None:
    """What a new user's first command does on a bare machine."""
    data_dir = tmp_path / "pgdata"
    env = {**_env(), "OMNINODE_DATA_DIR": str(data_dir)}

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode() + err.decode()

    try:
        code, text = await run("migrate")
        assert code == 0, text
        assert "applied migrations 0001" in text, text
        assert (data_dir / "PG_VERSION").exists(), "the data lives under the configured folder"
        assert f"created and started the embedded PostgreSQL in {data_dir}" in text
        assert _postmaster_running(data_dir), "the server keeps running for the user's other processes"
        code, text = await run("migrate")  # the running server is adopted: nothing to apply
        assert code == 0, text
        assert "up to date" in text.lower(), text
        assert "started the embedded" not in text, "announced once, by the process that started it"
    finally:
        code, text = await run("embedded", "stop")
    assert code == 0 and "stopped the embedded PostgreSQL" in text, text
    assert not _postmaster_running(data_dir)


def test_the_installed_command_has_every_layers_subcommands() -> None:
    """The console script loads the events and demo commands too (SPEC §4 lists them)."""
    import subprocess

    shown = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    listed = {line.split()[0] for line in shown.split("Commands:")[1].splitlines() if line.strip()}
    wanted = {"serve", "acquire", "release", "extend", "info", "list", "force-release", "cleanup", "events"}
    assert wanted | {"relay", "run", "demo", "migrate", "embedded"} <= listed
    follow = subprocess.run([CLI, "events", "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "--follow" in follow.stdout
