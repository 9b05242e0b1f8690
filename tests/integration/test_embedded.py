"""The per-user embedded PostgreSQL, with real processes.

Every process here runs with HOME and XDG_DATA_HOME in a temporary folder, so the
"user's" server lives there (never the real user's data folder) and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omninode_bridge.locks.embedded import embedded_status, start_embedded, stop_embedded

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("omninode-lock"))
ANNOUNCE = "omninode-bridge: "
CHILD = r"""
import asyncio, json, sys
from omninode_bridge.locks import LockClient, LockHeldByOtherError, LockSettings
from omninode_bridge.locks.embedded import embedded_status

async def main(mode: str, name: str) -> None:
    settings = LockSettings.load(pool_min=1, pool_max=2, cleanup_interval=3600)
    async with LockClient.connect(settings=settings, cleanup=False):
        pass  # a second connection in this process must not announce again
    async with LockClient.connect(settings=settings, cleanup=False) as locks:
        status = embedded_status(settings.data_dir)
        report = {"data_dir": str(status.data_dir), "server_pid": status.pid, "cwd": str(__import__("os").getcwd())}
        try:
            lease = await locks.acquire(name, f"child-{mode}", ttl=60, wait=0)
            report.update(result="granted", token=lease.token)
        except LockHeldByOtherError as err:
            report.update(result="held", error=str(err))
        print(json.dumps(report), flush=True)
        if mode == "hold":  # until our stdin closes, or we are killed
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(scope="module")
def user() -> Iterator[dict[str, Any]]:
    """A pretend user: environment, home, data folder, two working directories.

    A folder of our own, not pytest's tmp_path: pytest prunes old base folders, and
    another pytest run on this machine must not delete a live server's data under us.
    """
    base = Path(tempfile.mkdtemp(prefix="omninode-emb-"))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OMNINODE_", "POSTGRES_", "PG", "XDG_DATA"))
    }
    env.update(HOME=str(base / "home"), XDG_DATA_HOME=str(base / "xdg"))
    data_dir = base / "xdg" / "omninode-bridge" / "pgdata"
    for sub in ("home", "a", "b"):
        (base / sub).mkdir()
    script = base / "child.py"
    script.write_text(CHILD)
    try:
        yield {"env": env, "data_dir": data_dir, "a": base / "a", "b": base / "b", "script": script}
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def _child(user: dict[str, Any], mode: str, name: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(user["script"]), mode, name],
        cwd=cwd,
        env=user["env"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"child said nothing: {proc.stderr.read() if proc.stderr else ''}")
    report: dict[str, Any] = json.loads(line)
    return report


def _once(user: dict[str, Any], name: str, cwd: Path) -> tuple[dict[str, Any], str]:
    """A child that tries ``name`` once and exits; its report and stderr."""
    proc = _child(user, "try", name, cwd)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    report: dict[str, Any] = json.loads(out.splitlines()[0])
    return report, err


def _finish(proc: subprocess.Popen[str]) -> str:
    """Let a holder exit (closes its stdin); its stderr."""
    _, err = proc.communicate(timeout=60)
    return err


def _cli(user: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=user["env"], cwd=user["b"], capture_output=True, text=True, timeout=90
    )


def test_processes_from_different_directories_share_one_server_and_exclude(user: dict[str, Any]) -> None:
    holder = _child(user, "hold", "job:nightly", user["a"])
    try:
        held = _report(holder)
        assert held["result"] == "granted"
        assert held["data_dir"] == str(user["data_dir"]), "per-user folder, not the current directory"
        other, other_err = _once(user, "job:nightly", user["b"])
        assert other["cwd"] != held["cwd"]
        assert other["result"] == "held", other
        assert other["error"].startswith("LOCK_HELD_BY_OTHER: ")
        assert other["server_pid"] == held["server_pid"]
        assert ANNOUNCE not in other_err, "only the process that starts the server announces it"
    finally:
        holder_err = _finish(holder)
    announced = [line for line in holder_err.splitlines() if line.startswith(ANNOUNCE)]
    assert len(announced) == 1, holder_err
    assert str(user["data_dir"]) in announced[0] and "created and started" in announced[0]
    assert not (user["a"] / ".omninode").exists() and not (user["b"] / ".omninode").exists()
    assert embedded_status(user["data_dir"]).running, "the server outlives the process that started it"


def test_kill_9_of_the_starter_then_the_next_process_adopts_the_server(user: dict[str, Any]) -> None:
    stopped = _cli(user, "embedded", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not embedded_status(user["data_dir"]).running
    starter = _child(user, "hold", "job:adopt", user["a"])
    held = _report(starter)
    assert held["result"] == "granted"
    starter.send_signal(signal.SIGKILL)
    _, starter_err = starter.communicate(timeout=30)
    assert starter.returncode == -signal.SIGKILL
    assert "started the embedded PostgreSQL" in starter_err

    after, err = _once(user, "job:adopt", user["b"])
    assert after["server_pid"] == held["server_pid"], "the running server is adopted, not replaced"
    assert after["result"] == "held", "the killed holder's lease lives on in the same database"
    assert ANNOUNCE not in err
    fresh, _ = _once(user, "job:other", user["b"])
    assert fresh["result"] == "granted"


def test_kill_9_of_starter_and_server_then_the_next_process_restarts_it(user: dict[str, Any]) -> None:
    starter = _child(user, "hold", "job:restart", user["a"])
    held = _report(starter)
    starter.send_signal(signal.SIGKILL)
    starter.communicate(timeout=30)
    os.kill(held["server_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while embedded_status(user["data_dir"]).running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (user["data_dir"] / "postmaster.pid").exists(), "the dead server's pid file is left behind"

    after, err = _once(user, "job:fresh", user["b"])
    assert after["result"] == "granted"
    assert after["server_pid"] != held["server_pid"]
    assert embedded_status(user["data_dir"]).pid == after["server_pid"]
    assert "started the embedded PostgreSQL" in err and "created" not in err


def test_embedded_status_and_stop_commands(user: dict[str, Any]) -> None:
    start_embedded(user["data_dir"], keep_running=True, announce=False)
    status = _cli(user, "embedded", "status")
    assert status.returncode == 0, status.stderr
    pid = embedded_status(user["data_dir"]).pid
    assert f"running: pid {pid}" in status.stdout and str(user["data_dir"]) in status.stdout
    as_json = json.loads(_cli(user, "embedded", "status", "--json").stdout)
    assert (
        as_json["running"] is True and as_json["pid"] == pid and as_json["data_dir"] == str(user["data_dir"])
    )

    stopped = _cli(user, "embedded", "stop")
    assert stopped.returncode == 0 and f"stopped the embedded PostgreSQL (pid {pid})" in stopped.stdout
    status = _cli(user, "embedded", "status")
    assert status.returncode == 3 and f"not running: {user['data_dir']}" in status.stdout
    again = _cli(user, "embedded", "stop")
    assert again.returncode == 0 and "not running" in again.stdout
    # this process held a handle on the stopped server: a new start must not reuse it
    dsn = start_embedded(user["data_dir"], keep_running=True, announce=False)
    assert embedded_status(user["data_dir"]).running and "host=" in dsn


def test_two_first_commands_at_once_create_one_server(user: dict[str, Any]) -> None:
    """A new user's first two processes race to create the server: one creates, one adopts."""
    env = {**user["env"], "XDG_DATA_HOME": str(user["a"] / "fresh-xdg")}
    racer = {**user, "env": env}
    data_dir = user["a"] / "fresh-xdg" / "omninode-bridge" / "pgdata"
    try:
        procs = [_child(racer, "try", f"job:race-{i}", cwd) for i, cwd in enumerate((user["a"], user["b"]))]
        results = [proc.communicate(timeout=120) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], results
        reports = [json.loads(out.splitlines()[0]) for out, _ in results]
        assert reports[0]["server_pid"] == reports[1]["server_pid"]
        assert {r["data_dir"] for r in reports} == {str(data_dir)}
        announcements = [line for _, err in results for line in err.splitlines() if line.startswith(ANNOUNCE)]
        assert len(announcements) == 1 and "created and started" in announcements[0], announcements
    finally:
        stop_embedded(data_dir)


def test_status_and_stop_before_the_server_ever_existed(user: dict[str, Any]) -> None:
    never = {**user, "env": {**user["env"], "XDG_DATA_HOME": str(user["b"] / "never")}}
    status = _cli(never, "embedded", "status")
    assert status.returncode == 3 and "not created yet" in status.stdout, status.stdout + status.stderr
    stopped = _cli(never, "embedded", "stop")
    assert stopped.returncode == 0 and "not running" in stopped.stdout, stopped.stderr
    assert not (user["b"] / "never").exists(), "asking must not create anything"
