"""``omninode-lock`` with the event commands: ``relay`` and ``events --follow/--after``.

The engine's CLI (:mod:`omninode_bridge.locks.cli`) cannot import this layer (core <-
locks <- events), so this module extends its command group and is what the
``omninode-lock`` console script runs. ``events`` without ``--follow``/``--after``
is the engine's listing (newest first), unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import Literal

import click

from omninode_bridge.events.envelope import Envelope
from omninode_bridge.events.queries import load_event_queries
from omninode_bridge.events.relay import LINGER, Relay
from omninode_bridge.events.runner import kafka_sink, open_feed, relay_until_stopped
from omninode_bridge.locks.cli import Context, db_options, fail, main, pass_ctx, run
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockError

_listing = main.commands["events"]  # the engine's newest-first listing


@click.command("events")
@db_options
@click.option("--lock", "lock_name", default=None, help="Only events of this lock.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until SIGINT/SIGTERM.")
@click.option(
    "--after", type=click.IntRange(0), default=None, help="Events after this outbox id, oldest first."
)
@click.pass_context
def events_cmd(
    click_ctx: click.Context,
    lock_name: str | None,
    limit: int,
    as_json: bool,
    follow: bool,
    after: int | None,
) -> None:
    """The newest events from the outbox, newest first. With --after ID: every event after
    that outbox id, oldest first; with --follow: and then each new one as it commits
    (from the newest event unless --after is given). Works without any broker."""
    if not (follow or after is not None):
        click_ctx.invoke(_listing, lock_name=lock_name, limit=limit, as_json=as_json)
        return
    settings = click_ctx.ensure_object(Context).settings(pool_max=2)
    page = min(limit, 1000)  # per read
    run(lambda: _follow(settings, lock_name, page, as_json, follow, after), settings)


async def _follow(
    settings: LockSettings, lock_name: str | None, limit: int, as_json: bool, follow: bool, after: int | None
) -> None:
    stop = _stop_on_signals()
    async with open_feed(settings) as feed:
        position = await feed.last_id() if after is None else after
        while True:
            events = await feed.follow(position, 1.0 if follow else 0.0, limit, lock_name)
            for event in events:
                position = event["id"]
                click.echo(json.dumps(event, sort_keys=True) if as_json else _line(event))
            sys.stdout.flush()
            if stop.is_set() or not (follow or events):
                return


def _line(event: Envelope) -> str:
    token = "" if event["token"] is None else str(event["token"])
    details = ", ".join(f"{k}={v}" for k, v in sorted(event["payload"].items()))
    text = f"{event['id']} {event['occurred_at']} {event['event_type']} {event['lock_name']}"
    return f"{text} owner={event['owner_id'] or ''} token={token}" + (f" {details}" if details else "")


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (where the loop supports signal handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, Windows
            loop.add_signal_handler(sig, stop.set)
    return stop


@click.command("relay")
@db_options
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap servers (default: configuration).")
@click.option(
    "--topic-prefix", default=None, help="Topic prefix (default: configuration, dev.omninode-bridge)."
)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10000))
@click.option(
    "--linger-ms",
    default=LINGER * 1000,
    show_default=True,
    type=click.FloatRange(0, 1000),
    help="While busy, at most one round per this many ms (fewer, larger rounds; bounds the added latency).",
)
@click.option(
    "--idempotence",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="auto: an idempotent producer unless the broker refuses one (then acks=all alone, with a warning).",
)
@click.option(
    "--forget", is_flag=True, help="Unregister every relay (pruning stops keeping undelivered events)."
)
@pass_ctx
def relay_cmd(
    ctx: Context,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    batch_size: int,
    linger_ms: float,
    idempotence: Literal["auto", "on", "off"],
    forget: bool,
) -> None:
    """Relay lock events from the outbox to Kafka until SIGTERM/SIGINT."""
    settings = ctx.settings(pool_max=2)
    overrides = {"kafka_bootstrap_servers": bootstrap_servers, "kafka_topic_prefix": topic_prefix}
    try:
        settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    except LockError as err:
        fail(str(err))
    if forget:
        count = run(lambda: _forget(settings), settings)
        click.echo(f"unregistered {count} relay(s)")
        return

    def started(relay: Relay) -> None:
        click.echo(
            f"relaying events of schema {settings.schema} to {relay.sink.describe()} (relay {relay.relay_id})"
        )
        sys.stdout.flush()

    async def go() -> int:
        return await relay_until_stopped(
            settings, _stop_on_signals(), lambda: kafka_sink(settings, idempotence=idempotence),
            batch_size=batch_size, linger=linger_ms / 1000, started=started,
        )  # fmt: skip

    total = run(go, settings)
    click.echo(f"relay stopped after {total} event(s)")


async def _forget(settings: LockSettings) -> int:
    async with LockClient.connect(settings=settings, cleanup=False) as locks:
        status: str = await locks.pool.execute(load_event_queries(settings.schema)["forget_relays"])
    return int(status.split()[-1])


main.add_command(events_cmd)
main.add_command(relay_cmd)

if __name__ == "__main__":
    main()
