"""``omninode-lock``: operate the lock service from a shell.

Subcommands: ``migrate``, ``status``, ``acquire``, ``release``, ``extend``, ``info``,
``list``, ``force-release``, ``cleanup``, ``events`` and ``embedded status|stop``
(``relay`` and ``events --follow`` come from :mod:`omninode_bridge.events.cli`, ``demo``
from :mod:`omninode_bridge.demos.cli`, ``serve`` and ``run`` from
:mod:`omninode_bridge.service.commands`, the installed entry point, which loads them all). The database comes from ``--dsn``, else the environment / ``.env`` / config file
(:meth:`LockSettings.load`), else this user's embedded PostgreSQL. Expected failures (bad
settings included) print one line on stderr and exit non-zero; no password is ever
printed (messages go through :func:`redact_text`, which also scrubs every configured
DSN's password).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.table import Table

from omninode_bridge import __version__
from omninode_bridge.core.logging import redact_text
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import CONFIG_VAR, ENV_VARS, LockSettings
from omninode_bridge.locks.errors import LockError
from omninode_bridge.locks.migrate import migrate as apply_migrations

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one redacted line on stderr and exit with ``code``."""
    line = " ".join(redact_text(message).split())  # one line, whatever the message held
    click.echo(f"omninode-lock: error: {line}", err=True)
    sys.exit(code)


def run(factory: Callable[[], Awaitable[T]], settings: LockSettings) -> T:
    """Run a coroutine; turn expected failures into one clear line and exit code 1
    (``OMNINODE_TRACEBACK=1`` also prints where it failed, for a bug report)."""
    try:
        return asyncio.run(_guard(factory))
    except (
        LockError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        ValueError,
        OverflowError,
    ) as err:
        if os.environ.get("OMNINODE_TRACEBACK"):  # secrets scrubbed like every log line
            sys.stderr.write(redact_text(traceback.format_exc()))
        _fail_for(err, settings)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def _fail_for(err: Exception, settings: LockSettings) -> NoReturn:
    if isinstance(err, LockError):
        fail(str(err))
    if isinstance(err, (ValueError, OverflowError)):
        # the driver's words may quote the DSN: show only the redacted DSN
        fail(f"VALIDATION_ERROR: invalid DSN {settings.safe_dsn()} ({type(err).__name__})")
    fail(f"DATABASE_ERROR: {type(err).__name__}: {err}")


async def _guard(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


class Context:
    """What the global options resolve to; settings are loaded lazily per command."""

    def __init__(self, dsn: str | None = None, schema: str | None = None) -> None:
        self.dsn = dsn
        self.schema = schema

    def settings(self, pool_max: int | None = None) -> LockSettings:
        """The user's settings, validated as configured; then (for short commands) a
        smaller pool. Invalid pool settings are reported, not hidden by the override."""
        try:
            settings = LockSettings.load(dsn=self.dsn, schema=self.schema)
            if pool_max is not None:
                settings = settings.replace(pool_min=1, pool_max=min(pool_max, settings.pool_max))
            return settings
        except LockError as err:
            fail(str(err))


F = TypeVar("F", bound=Callable[..., Any])


def db_options(command: F) -> F:
    """``--dsn``/``--schema`` also after the subcommand; they override the global ones."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            setattr(ctx.ensure_object(Context), param.name or "", value)

    command = click.option(
        "--schema", default=None, expose_value=False, callback=remember, help="Overrides the global --schema."
    )(command)
    command = click.option(
        "--dsn", default=None, expose_value=False, callback=remember, help="Overrides the global --dsn."
    )(command)
    return command


pass_ctx = click.make_pass_decorator(Context, ensure=True)


_EPILOG = (
    "\b\nConfiguration (arguments > environment > ./.env > the TOML file named by "
    f"{CONFIG_VAR}, table [omninode]); variable, then file key:\n"
    + "\n".join(f"  {var:<42} {name}" for name, var in ENV_VARS.items())
    + f"\n  {'POSTGRES_HOST/PORT/DATABASE/USER/PASSWORD':<42} dsn (seed-compatible)"
    + "\nWith no DSN, your own embedded PostgreSQL is used (see 'omninode-lock embedded status')."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.version_option(__version__, prog_name="omninode-lock")
@click.option(
    "--dsn",
    envvar=None,
    help="PostgreSQL DSN, URL or key=value form (default: configuration, else embedded).",
)
@click.option("--schema", default=None, help="Schema holding the lock tables (default omninode_locks).")
@click.pass_context
def main(ctx: click.Context, dsn: str | None, schema: str | None) -> None:
    """Distributed locks on PostgreSQL: administer and demonstrate."""
    ctx.obj = Context(dsn, schema)


@main.command("migrate")
@db_options
@pass_ctx
def migrate_cmd(ctx: Context) -> None:
    """Create or upgrade the lock schema; print the versions applied."""
    settings = ctx.settings(pool_max=1)

    async def go() -> list[int]:
        opening = LockClient.connect(settings=settings, run_migrations=False, cleanup=False)
        async with opening as locks, locks.pool.acquire() as conn:
            return await apply_migrations(conn, settings.schema)  # type: ignore[arg-type]

    applied = run(go, settings)
    where = settings.safe_dsn()
    if applied:
        versions = ", ".join(f"{v:04d}" for v in applied)
        click.echo(f"applied migrations {versions} to schema {settings.schema} at {where}")
    else:
        click.echo(f"schema {settings.schema} at {where} is up to date (nothing to apply)")


@main.command("status")
@db_options
@click.option("--prefix", default=None, help="Only locks whose name starts with this.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Counts and locks as one JSON object.")
@pass_ctx
def status_cmd(ctx: Context, prefix: str | None, limit: int, as_json: bool) -> None:
    """Counts and the currently held locks."""

    settings = ctx.settings(pool_max=2)

    async def go() -> tuple[dict[str, int], list[Any]]:
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            return await locks.counts(), await locks.list_locks(prefix=prefix, limit=limit)

    counts, held = run(go, settings)
    if as_json:
        rows = [
            {
                "name": h.name,
                "mode": "exclusive" if h.exclusive else "shared",
                "holders": h.holders,
                "owners": h.owners,
                "permits": h.permits,
                "waiters": h.waiters,
                "last_token": h.last_token,
                "next_expiry": h.next_expiry,
            }
            for h in held
        ]
        _emit({"counts": counts, "locks": rows}, True, "")
        return
    console = _console()
    console.print(
        "  ".join(f"[bold]{k.replace('_', ' ')}[/]: {v}" for k, v in counts.items()), highlight=False
    )
    table = Table(title="held locks", title_justify="left")
    for column in ("name", "mode", "holders", "permits", "owners", "waiters", "last token", "next expiry"):
        table.add_column(column)
    for lock in held:
        table.add_row(
            lock.name,
            "exclusive" if lock.exclusive else "shared",
            str(lock.holders),
            str(lock.permits),
            ", ".join(lock.owners),
            str(lock.waiters),
            str(lock.last_token),
            _when(lock.next_expiry),
        )
    if held:
        console.print(table)
    else:
        console.print("no locks are held")


def _client(settings: LockSettings) -> Any:
    return LockClient.connect(settings=settings, cleanup=False)


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, default=str, sort_keys=True) if as_json else text)


@main.command("acquire")
@db_options
@click.argument("name")
@click.option("--owner", "owner_id", default=None, help="Owner id (default: host:pid:random).")
@click.option("--mode", type=click.Choice(["exclusive", "shared"]), default="exclusive", show_default=True)
@click.option("--ttl", type=click.FloatRange(1, 3600), default=None, help="Seconds (default from config).")
@click.option("--wait", type=click.FloatRange(0, 3600), default=0.0, show_default=True)
@click.option("--permits", type=click.IntRange(1, 100_000), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the lease as JSON.")
@pass_ctx
def acquire_cmd(
    ctx: Context,
    name: str,
    owner_id: str | None,
    mode: str,
    ttl: float | None,
    wait: float,
    permits: int | None,
    as_json: bool,
) -> None:
    """Take NAME and print the lease (its lease id releases or extends it later)."""
    settings = ctx.settings(pool_max=1)

    async def go() -> dict[str, Any]:
        async with _client(settings) as locks:
            lease = await locks.acquire(name, owner_id, mode=mode, ttl=ttl, wait=wait, permits=permits)
            return dict(lease.to_dict())

    lease = run(go, settings)
    _emit(
        lease,
        as_json,
        f"acquired {name!r} token={lease['token']} lease_id={lease['lease_id']} "
        f"expires_at={lease['expires_at']}",
    )


@main.command("release")
@db_options
@click.argument("lease_id")
@pass_ctx
def release_cmd(ctx: Context, lease_id: str) -> None:
    """Release the lease LEASE_ID (idempotent)."""
    settings = ctx.settings(pool_max=1)

    async def go() -> bool:
        async with _client(settings) as locks:
            return bool(await locks.release(lease_id))

    click.echo("released" if run(go, settings) else "already released")


@main.command("extend")
@db_options
@click.argument("lease_id")
@click.option("--ttl", type=click.FloatRange(1, 3600), default=None, help="Seconds from now.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def extend_cmd(ctx: Context, lease_id: str, ttl: float | None, as_json: bool) -> None:
    """Renew the lease LEASE_ID for --ttl seconds from now."""
    settings = ctx.settings(pool_max=1)

    async def go() -> dict[str, Any]:
        async with _client(settings) as locks:
            return dict((await locks.extend_lease_id(lease_id, ttl)).to_dict())

    lease = run(go, settings)
    _emit(lease, as_json, f"extended {lease['lock_name']!r} until {lease['expires_at']}")


@main.command("info")
@db_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def info_cmd(ctx: Context, name: str, as_json: bool) -> None:
    """Holders, waiters and last token of NAME (lease ids are never shown)."""
    settings = ctx.settings(pool_max=1)

    async def go() -> Any:
        async with _client(settings) as locks:
            return await locks.get_lock_info(name)

    info = run(go, settings)
    holders = [
        {k: v for k, v in h.to_dict().items() if k != "lease_id"} | {"hold_count": h.hold_count}
        for h in info.holders
    ]
    waiters = [{"owner_id": w.owner_id, "mode": w.mode.value, "position": w.position} for w in info.waiters]
    data = {
        "name": info.name,
        "held": info.held,
        "permits": info.permits,
        "last_token": info.last_token,
        "holders": holders,
        "waiters": waiters,
    }
    lines = [
        f"{name}: {'held' if info.held else 'free'}, permits={info.permits}, last token={info.last_token}"
    ]
    lines += [
        f"  holder {h['owner_id']} {h['mode']} token={h['token']} expires={h['expires_at']}" for h in holders
    ]
    lines += [f"  waiter {w['position']}. {w['owner_id']} {w['mode']}" for w in waiters]
    _emit(data, as_json, "\n".join(lines))


@main.command("list")
@db_options
@click.option("--prefix", default=None)
@click.option("--owner", "owner_id", default=None)
@click.option("--expiring-within", type=click.FloatRange(0), default=None, help="Seconds.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_cmd(
    ctx: Context,
    prefix: str | None,
    owner_id: str | None,
    expiring_within: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """Held locks, by name."""
    settings = ctx.settings(pool_max=1)

    async def go() -> list[Any]:
        async with _client(settings) as locks:
            return list(
                await locks.list_locks(
                    prefix=prefix, owner_id=owner_id, expiring_within=expiring_within, limit=limit
                )
            )

    rows = [
        {
            "name": r.name,
            "mode": "exclusive" if r.exclusive else "shared",
            "holders": r.holders,
            "owners": r.owners,
            "permits": r.permits,
            "waiters": r.waiters,
            "last_token": r.last_token,
            "next_expiry": r.next_expiry,
        }
        for r in run(go, settings)
    ]
    text = "\n".join(
        f"{r['name']}\t{r['mode']}\t{','.join(r['owners'])}\twaiters={r['waiters']}" for r in rows
    )
    _emit(rows, as_json, text or "no locks are held")


@main.command("cleanup")
@db_options
@pass_ctx
def cleanup_cmd(ctx: Context) -> None:
    """Reap expired leases now."""
    settings = ctx.settings(pool_max=1)

    async def go() -> int:
        async with _client(settings) as locks:
            return int(await locks.cleanup_expired())

    click.echo(f"cleaned {run(go, settings)} expired lease(s)")


@main.command("force-release")
@db_options
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded in the lock_force_released event).")
@pass_ctx
def force_release_cmd(ctx: Context, name: str, reason: str) -> None:
    """Admin: free every lease of NAME now."""

    settings = ctx.settings(pool_max=1)

    async def go() -> int:
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            return await locks.force_release(name, reason)

    count = run(go, settings)
    click.echo(f"force-released {count} lease(s) of {name!r}")


@main.command("events")
@db_options
@click.option("--lock", "lock_name", default=None, help="Only events of this lock.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def events_cmd(ctx: Context, lock_name: str | None, limit: int, as_json: bool) -> None:
    """The newest events from the outbox, newest first."""

    settings = ctx.settings(pool_max=1)

    async def go() -> list[dict[str, Any]]:
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            return await locks.recent_events(lock_name, limit)

    # lease ids are secrets: only the acquirer's own answer shows one
    events = [{k: v for k, v in e.items() if k != "lease_id"} for e in run(go, settings)]
    if as_json:
        for event in events:
            click.echo(json.dumps(event, default=str, sort_keys=True))
        return
    table = Table(title="recent events", title_justify="left")
    for column in ("id", "time", "event", "lock", "owner", "token", "details"):
        table.add_column(column)
    for e in events:
        payload = e["payload"] if isinstance(e["payload"], dict) else {}
        table.add_row(
            str(e["id"]),
            _when(e["created_at"]),
            e["event_type"],
            e["lock_name"],
            e["owner_id"] or "",
            "" if e["token"] is None else str(e["token"]),
            ", ".join(f"{k}={v}" for k, v in sorted(payload.items())),
        )
    _console().print(table if events else "no events")


EXIT_NOT_RUNNING = 3  # as `pg_ctl status` and LSB init scripts say "not running"


@main.group("embedded")
def embedded_group() -> None:
    """This user's embedded PostgreSQL (used when no database is configured)."""


def _embedded_dir(data_dir: str | None) -> str:
    if data_dir is not None:
        return data_dir
    try:
        return LockSettings.load().data_dir
    except LockError as err:
        fail(str(err))


_data_dir_option = click.option(
    "--data-dir", default=None, help="The server's data folder (default: OMNINODE_DATA_DIR, else per user)."
)


@embedded_group.command("status")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def embedded_status_cmd(data_dir: str | None, as_json: bool) -> None:
    """Is the embedded server running, where, since when; exit 3 when it is not."""
    from omninode_bridge.locks.embedded import embedded_status

    status = embedded_status(_embedded_dir(data_dir))
    if as_json:
        record = {
            "data_dir": str(status.data_dir),
            "initialised": status.initialised,
            "running": status.running,
            "pid": status.pid,
            "dsn": status.dsn,
            "started_at": status.started_at.isoformat() if status.started_at else None,
        }
        click.echo(json.dumps(record, sort_keys=True))
    elif status.running:
        since = status.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if status.started_at else "?"
        click.echo(f"running: pid {status.pid}, since {since}")
        click.echo(f"data:    {status.data_dir}")
        click.echo(f"dsn:     {status.dsn}")
    else:
        state = (
            "not running"
            if status.initialised
            else "not created yet (the first command without a DSN creates it)"
        )
        click.echo(f"{state}: {status.data_dir}")
    sys.exit(0 if status.running else EXIT_NOT_RUNNING)


@embedded_group.command("stop")
@_data_dir_option
def embedded_stop_cmd(data_dir: str | None) -> None:
    """Stop the embedded server (its clients are disconnected; data is kept)."""
    from omninode_bridge.locks.embedded import EmbeddedError, stop_embedded

    try:
        status = stop_embedded(_embedded_dir(data_dir))
    except (EmbeddedError, OSError) as err:
        fail(f"cannot stop the embedded PostgreSQL: {err}")
    if status.running:
        click.echo(f"stopped the embedded PostgreSQL (pid {status.pid}) in {status.data_dir}")
    else:
        click.echo(f"not running: {status.data_dir}")


def _console() -> Console:
    """Rich output; 120 columns when piped so tables do not wrap in logs."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%H:%M:%S.%f")[:-3]


if __name__ == "__main__":
    main()
