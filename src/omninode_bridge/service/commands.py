"""``omninode-lock`` as installed: the engine's commands (:mod:`omninode_bridge.locks.cli`)
plus ``serve`` (the HTTP service) and ``run NAME -- COMMAND`` (flock(1) for a fleet).

The engine never imports this module; this module adds to the engine's CLI group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import click

# the commands of the layers below, registered on the engine's group: relay and
# events --follow (events), demo (demos); then serve and run (below)
from omninode_bridge.demos import cli as _demo_commands  # noqa: F401
from omninode_bridge.events import cli as _event_commands  # noqa: F401
from omninode_bridge.locks.cli import Context, db_options, fail, main, pass_ctx
from omninode_bridge.locks.cli import run as run_coro
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.errors import LockError, LockHeldByOtherError, LockTimeoutError

EXIT_BUSY = 75  # EX_TEMPFAIL, as flock(1) -n -E 75 would say
EXIT_LOST = 70  # EX_SOFTWARE: the lease was lost and COMMAND was stopped

__all__ = ["main"]


@main.command("serve")
@db_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8070, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--insecure-no-auth", is_flag=True, help="Allow a non-loopback address with no auth tokens configured."
)
@click.option("--log-level", default="info", show_default=True)
@click.option("--demo-load", is_flag=True, help="Run a small background load (for make run).")
@pass_ctx
def serve_cmd(
    ctx: Context, host: str, port: int, workers: int, insecure_no_auth: bool, log_level: str, demo_load: bool
) -> None:
    """Serve the HTTP API, /metrics, /health and the dashboard (needs the service extra)."""
    try:
        from omninode_bridge.service.server import serve
    except ImportError as err:
        fail(f"the service needs its extra: pip install 'omninode-bridge[service]' ({err.name} missing)")
    settings = ctx.settings()
    if workers > 1 and ctx.dsn is not None:
        fail("with --workers > 1 every worker reads the environment: set OMNINODE_POSTGRES_DSN, not --dsn")
    try:
        serve(
            settings,
            host,
            port,
            workers=workers,
            allow_public_without_auth=insecure_no_auth,
            log_level=log_level,
            demo_load=demo_load,
        )
    except LockError as err:
        fail(f"{err.code}: {err.message}")


@main.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@db_options
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--wait", type=click.FloatRange(0, 3600), default=None, help="Queue up to this many seconds.")
@click.option("--ttl", type=click.FloatRange(3, 3600), default=30.0, show_default=True)
@click.option("--owner", "owner_id", default=None)
@click.option("--mode", type=click.Choice(["exclusive", "shared"]), default="exclusive", show_default=True)
@click.option(
    "--kill-after",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when the lease is lost.",
)
@pass_ctx
def run_cmd(
    ctx: Context,
    name: str,
    command: tuple[str, ...],
    wait: float | None,
    ttl: float,
    owner_id: str | None,
    mode: str,
    kill_after: float,
) -> None:
    """Hold NAME (auto-renewed) while COMMAND runs; exit with COMMAND's exit code.

    Busy: exit 75 at once (or queue with --wait). If the lease is lost, COMMAND gets
    SIGTERM, then SIGKILL after --kill-after seconds, and this exits 70.
    """
    if command[:1] == ("--",):  # with ignore_unknown_options click hands the separator on
        command = command[1:]
    if not command:
        fail("run needs a COMMAND after NAME (omninode-lock run NAME -- COMMAND ...)", 2)
    settings = ctx.settings(pool_max=2)

    async def go() -> int:
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            try:
                return await _hold_and_run(locks, name, command, wait or 0.0, ttl, owner_id, mode, kill_after)
            except (LockHeldByOtherError, LockTimeoutError) as err:
                click.echo(f"omninode-lock: {name!r} is busy: {err.message}", err=True)
                return EXIT_BUSY

    sys.exit(run_coro(go, settings))


async def _hold_and_run(
    locks: LockClient,
    name: str,
    command: tuple[str, ...],
    wait: float,
    ttl: float,
    owner_id: str | None,
    mode: str,
    kill_after: float,
) -> int:
    lost: list[str] = []
    proc: asyncio.subprocess.Process | None = None
    try:
        async with locks.lock(
            name,
            owner_id,
            auto_renew=True,
            on_lost=lambda _l, why: lost.append(why),
            ttl=ttl,
            wait=wait,
            mode=mode,
        ):
            # its own process group, so stopping it stops its children too
            proc = await asyncio.create_subprocess_exec(*command, start_new_session=True)
            _forward_signals(proc)
            return await proc.wait()
    except (asyncio.CancelledError, LockError):
        if not lost:
            raise
    click.echo(f"omninode-lock: lease on {name!r} lost ({lost[0]}); stopping the command", err=True)
    if proc is not None and proc.returncode is None:
        await _stop(proc, kill_after)
    return EXIT_LOST


async def _stop(proc: asyncio.subprocess.Process, kill_after: float) -> None:
    """SIGTERM to COMMAND's process group, SIGKILL after ``kill_after`` seconds."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), kill_after)
    _signal_group(proc, signal.SIGKILL)  # also any child that outlived its parent
    await proc.wait()


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _forward_signals(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM/SIGINT/SIGHUP to us go to COMMAND; we exit when it does, releasing the lock."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _send, proc, sig)


def _send(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        _signal_group(proc, sig)
