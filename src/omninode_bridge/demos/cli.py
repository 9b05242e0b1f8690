"""``omninode-lock demo``: added to the engine's CLI group from above it (the engine
never imports its demonstrations)."""

from __future__ import annotations

import sys

import asyncpg
import click

from omninode_bridge.locks.cli import EXIT_ERROR, Context, db_options, fail, main, pass_ctx
from omninode_bridge.locks.errors import LockError

__all__ = ["main"]


@main.command("demo")
@db_options
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(1, 600))
@click.option("--workers", default=5, show_default=True, type=click.IntRange(2, 32))
@click.option("--quiet", is_flag=True, help="Only the summary, no live lines.")
@pass_ctx
def demo_cmd(ctx: Context, seconds: float, workers: int, quiet: bool) -> None:
    """Live demonstration: worker processes contend for locks; invariants are checked."""
    from omninode_bridge.demos.contention import run_demo

    settings = ctx.settings()
    try:
        ok = run_demo(settings, seconds=seconds, workers=workers, live=not quiet)
    except LockError as err:
        fail(str(err))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        fail(f"DATABASE_ERROR: {type(err).__name__}: {err}")
    except KeyboardInterrupt:
        fail("interrupted", 130)
    sys.exit(0 if ok else EXIT_ERROR)
