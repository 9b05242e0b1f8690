"""``omninode-lock``: operate the lock service from a shell.

Subcommands: ``migrate``, ``status``, ``force-release``, ``events`` and ``demo``.
The database comes from ``--dsn``, else the environment / config file
(:meth:`LockSettings.load`), else an embedded PostgreSQL under ``.omninode/pgdata``.
Expected failures print one line on stderr and exit non-zero; no password is ever
printed (messages go through :func:`redact_text`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.table import Table

from omninode_bridge.core.logging import redact_text
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import LockSettings
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
    """Run a coroutine; turn expected failures into one clear line and exit code 1."""
    try:
        return asyncio.run(_guard(factory))
    except LockError as err:
        fail(f"{err.code}: {err.message}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        fail(f"DATABASE_ERROR: {type(err).__name__}: {err}")
    except ValueError as err:
        # asyncpg rejects a malformed DSN with a bare ValueError; its text may quote the
        # DSN, so only the redacted DSN is shown
        fail(f"VALIDATION_ERROR: invalid DSN {settings.safe_dsn()} ({type(err).__name__})")
    except KeyboardInterrupt:
        fail("interrupted", 130)


async def _guard(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


class Context:
    """What the global options resolve to; settings are loaded lazily per command."""

    def __init__(self, dsn: str | None = None, schema: str | None = None) -> None:
        self.dsn = dsn
        self.schema = schema

    def settings(self, **overrides: Any) -> LockSettings:
        try:
            return LockSettings.load(dsn=self.dsn, schema=self.schema, **overrides)
        except LockError as err:
            fail(f"{err.code}: {err.message}")
        except (TypeError, ValueError) as err:
            fail(f"VALIDATION_ERROR: invalid configuration: {err}")


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar=None, help="PostgreSQL DSN (default: environment, else embedded).")
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
    settings = ctx.settings(pool_min=1, pool_max=1)

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
@pass_ctx
def status_cmd(ctx: Context, prefix: str | None, limit: int) -> None:
    """Counts and the currently held locks."""

    settings = ctx.settings(pool_min=1, pool_max=2)

    async def go() -> tuple[dict[str, int], list[Any]]:
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            return await locks.counts(), await locks.list_locks(prefix=prefix, limit=limit)

    counts, held = run(go, settings)
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


@main.command("force-release")
@db_options
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded in the lock_force_released event).")
@pass_ctx
def force_release_cmd(ctx: Context, name: str, reason: str) -> None:
    """Admin: free every lease of NAME now."""

    settings = ctx.settings(pool_min=1, pool_max=1)

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

    settings = ctx.settings(pool_min=1, pool_max=1)

    async def go() -> list[dict[str, Any]]:
        async with LockClient.connect(settings=settings, cleanup=False) as locks:
            return await locks.recent_events(lock_name, limit)

    events = run(go, settings)
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


@main.command("demo")
@db_options
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(1, 600))
@click.option("--workers", default=5, show_default=True, type=click.IntRange(2, 32))
@click.option("--quiet", is_flag=True, help="Only the summary, no live lines.")
@pass_ctx
def demo_cmd(ctx: Context, seconds: float, workers: int, quiet: bool) -> None:
    """Live demonstration: worker processes contend for locks; invariants are checked."""
    from omninode_bridge.locks.demo import run_demo

    settings = ctx.settings()
    try:
        ok = run_demo(settings, seconds=seconds, workers=workers, live=not quiet)
    except LockError as err:
        fail(f"{err.code}: {err.message}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        fail(f"DATABASE_ERROR: {type(err).__name__}: {err}")
    except KeyboardInterrupt:
        fail("interrupted", 130)
    sys.exit(0 if ok else EXIT_ERROR)


def _console() -> Console:
    """Rich output; 120 columns when piped so tables do not wrap in logs."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%H:%M:%S.%f")[:-3]


if __name__ == "__main__":
    main()
