"""``omninode-lock demo``: worker processes contend for real locks, live.

The parent resolves the database once (the configured DSN, or it starts the embedded
PostgreSQL), migrates, and spawns worker OS processes that connect by DSN. Each worker
loops over three locks:

* ``reports:nightly`` — exclusive;
* ``cache:config``    — readers/writer: shared readers, an exclusive writer;
* ``pool:gpu``        — a semaphore with ``permits=2``.

Invariants are verified in PostgreSQL, not in memory: on entering and leaving its
critical section a worker updates a per-lock holder counter row (row-locked, so the
counts are exact) in its own transaction, and exclusive holders write a guarded
resource through :meth:`LockClient.fence_guard` in the same transaction, so a stale
holder's write would be rejected and reported. Readers check that no writer with a
newer token wrote while they held the lock. Any violation is printed loudly and makes
the demo exit with code 1.

Hand-off latency (a release to the next waiter's grant) is measured across processes
with ``time.time()``: fine on one machine, meaningless across hosts.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import queue
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from omninode_bridge.core.dsn import DsnError, to_url
from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.embedded import start_embedded
from omninode_bridge.locks.errors import (
    LockHeldByOtherError,
    LockValidationError,
    StaleTokenError,
)
from omninode_bridge.locks.migrate import migrate
from omninode_bridge.locks.pool import raise_connect_error
from omninode_bridge.locks.queries import check_schema

DEMO_SCHEMA = "omninode_demo"


@dataclass(frozen=True)
class DemoLock:
    """One lock of the demo and what it allows at once."""

    name: str
    kind: str  # "exclusive" | "rw" | "semaphore"
    permits: int | None
    weight: int

    @property
    def allowed(self) -> str:
        return {"exclusive": "1", "rw": "1 writer | N readers", "semaphore": "2"}[self.kind]


LOCKS = (
    DemoLock("reports:nightly", "exclusive", None, 3),
    DemoLock("cache:config", "rw", None, 4),
    DemoLock("pool:gpu", "semaphore", 2, 3),
)
BY_NAME = {lock.name: lock for lock in LOCKS}

SETUP_SQL = [
    f"CREATE SCHEMA IF NOT EXISTS {DEMO_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {DEMO_SCHEMA}.holders (
        run_id text NOT NULL, lock_name text NOT NULL,
        readers integer NOT NULL DEFAULT 0, writers integer NOT NULL DEFAULT 0,
        max_readers integer NOT NULL DEFAULT 0, max_writers integer NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, lock_name))""",
    f"""CREATE TABLE IF NOT EXISTS {DEMO_SCHEMA}.resources (
        run_id text NOT NULL, lock_name text NOT NULL,
        writes bigint NOT NULL DEFAULT 0, last_token bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, lock_name))""",
]

ENTER_SQL = f"""
UPDATE {DEMO_SCHEMA}.holders
   SET readers = readers + $3, writers = writers + $4,
       max_readers = greatest(max_readers, readers + $3),
       max_writers = greatest(max_writers, writers + $4)
 WHERE run_id = $1 AND lock_name = $2
RETURNING readers, writers"""

LEAVE_SQL = f"""
UPDATE {DEMO_SCHEMA}.holders SET readers = readers - $3, writers = writers - $4
 WHERE run_id = $1 AND lock_name = $2"""

WRITE_SQL = f"""
UPDATE {DEMO_SCHEMA}.resources SET writes = writes + 1, last_token = $3
 WHERE run_id = $1 AND lock_name = $2"""

LAST_WRITE_SQL = f"SELECT last_token FROM {DEMO_SCHEMA}.resources WHERE run_id = $1 AND lock_name = $2"


# -- worker process ------------------------------------------------------------------


@dataclass
class WorkerArgs:
    index: int
    dsn: str
    schema: str
    run_id: str
    start_at: float  # time.time() when the run starts (same machine)
    end_at: float
    seed: int


def worker_main(args: WorkerArgs, events: Any) -> None:
    """Entry point of a spawned worker process; reports everything through ``events``."""
    try:
        asyncio.run(_worker(args, events))
    except Exception as err:  # reported to the parent, which fails the run
        events.put({"kind": "crash", "worker": args.index, "error": f"{type(err).__name__}: {err}"})
    finally:
        events.put({"kind": "done", "worker": args.index})


async def _worker(args: WorkerArgs, events: Any) -> None:
    rng = random.Random(args.seed)
    owner = f"demo-w{args.index}"
    # the parent validated the DSN and schema; not parsing them again here keeps the DSN
    # parser (psycopg) out of the worker's start-up, which the demo's clock waits for
    settings = LockSettings.model_construct(
        postgres_dsn=SecretStr(args.dsn),
        lock_schema=args.schema,
        pool_min=1,
        pool_max=3,
        recheck_interval=1.0,
    )
    async with LockClient.connect(settings=settings, run_migrations=False, cleanup=False) as locks:
        conn: asyncpg.Connection = await asyncpg.connect(args.dsn)
        try:
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
            while time.time() < args.end_at:
                lock = rng.choices(LOCKS, weights=[x.weight for x in LOCKS])[0]
                mode = "shared" if lock.kind == "rw" and rng.random() < 0.7 else "exclusive"
                await _one_round(locks, conn, args, events, owner, lock, mode, rng)
                await asyncio.sleep(rng.uniform(0.02, 0.15))
        finally:
            await conn.close()


async def _one_round(
    locks: LockClient,
    conn: asyncpg.Connection,
    args: WorkerArgs,
    events: Any,
    owner: str,
    lock: DemoLock,
    mode: str,
    rng: random.Random,
) -> None:
    base = {"worker": args.index, "lock": lock.name, "mode": mode}
    asked = time.time()
    queued_at: float | None = None
    try:
        lease = await locks.acquire(lock.name, owner, mode=mode, ttl=10, wait=0, permits=lock.permits)
    except LockHeldByOtherError as err:
        queued_at = time.time()
        events.put({**base, "kind": "wait", "t": queued_at, "holders": err.details.get("holders", [])})
        remaining = max(1.0, args.end_at - time.time() + 5.0)
        lease = await locks.acquire(lock.name, owner, mode=mode, ttl=10, wait=remaining, permits=lock.permits)
    granted = time.time()
    events.put(
        {
            **base,
            "kind": "grant",
            "t": granted,
            "token": lease.token,
            "wait_ms": (granted - asked) * 1000,
            "queued_at": queued_at,
        }
    )
    readers, writers = (1, 0) if mode == "shared" else (0, 1)
    try:
        await _enter(locks, conn, args, events, base, lock, lease.token, readers, writers)
        await asyncio.sleep(rng.uniform(0.05, 0.25))
        await _check_readers_view(conn, args, events, base, lock, lease.token, mode)
    finally:
        async with conn.transaction():
            await conn.execute(LEAVE_SQL, args.run_id, lock.name, readers, writers)
        events.put({**base, "kind": "release", "t": time.time(), "token": lease.token})
        await locks.release(lease)


async def _enter(
    locks: LockClient,
    conn: asyncpg.Connection,
    args: WorkerArgs,
    events: Any,
    base: dict[str, Any],
    lock: DemoLock,
    token: int,
    readers: int,
    writers: int,
) -> None:
    """Count ourselves in (and write the guarded resource if exclusive), one transaction."""
    problems: list[str] = []
    async with conn.transaction():
        row = await conn.fetchrow(ENTER_SQL, args.run_id, lock.name, readers, writers)
        assert row is not None
        now_r, now_w = row["readers"], row["writers"]
        if lock.kind == "semaphore":
            if now_w > 2:
                problems.append(f"{now_w} holders of a permits=2 semaphore")
        elif now_w > 1:
            problems.append(f"{now_w} exclusive holders at once")
        elif now_w and now_r:
            problems.append(f"a writer and {now_r} reader(s) at once")
        if lock.kind != "semaphore" and writers:
            try:
                await locks.fence_guard(conn, f"demo:{args.run_id}:{lock.name}", token)
                await conn.execute(WRITE_SQL, args.run_id, lock.name, token)
            except StaleTokenError:
                problems.append(f"fencing token {token} rejected as stale (an older holder wrote later)")
    for problem in problems:
        events.put({**base, "kind": "violation", "t": time.time(), "token": token, "problem": problem})


async def _check_readers_view(
    conn: asyncpg.Connection,
    args: WorkerArgs,
    events: Any,
    base: dict[str, Any],
    lock: DemoLock,
    token: int,
    mode: str,
) -> None:
    """A reader must never see a write made with a newer token while it holds the lock."""
    if mode != "shared":
        return
    last = await conn.fetchval(LAST_WRITE_SQL, args.run_id, lock.name)
    if last is not None and last > token:
        problem = f"writer with token {last} wrote while reader with token {token} held the lock"
        events.put({**base, "kind": "violation", "t": time.time(), "token": token, "problem": problem})


# -- parent --------------------------------------------------------------------------


@dataclass
class LockStats:
    grants: int = 0
    waits: int = 0
    wait_ms: list[float] = field(default_factory=list)
    handoff_ms: list[float] = field(default_factory=list)
    tokens_by_worker: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    tokens: list[int] = field(default_factory=list)
    last_release: float = 0.0


@dataclass
class DemoResult:
    stats: dict[str, LockStats]
    violations: list[str]
    crashes: list[str]
    max_seen: dict[str, tuple[int, int]]
    log_monotonic: dict[str, bool]


def resolve_dsn(settings: LockSettings) -> str:
    """The configured DSN (in the URL form asyncpg reads), or this user's embedded
    server's (started or adopted once, here in the parent)."""
    if settings.dsn is None:
        return start_embedded(settings.data_dir, keep_running=True)
    try:
        return to_url(settings.dsn)
    except DsnError as err:
        raise LockValidationError(str(err), field="dsn") from None


def run_demo(settings: LockSettings, *, seconds: float = 10.0, workers: int = 5, live: bool = True) -> bool:
    """Run the demonstration; return True when every invariant held."""
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    dsn = resolve_dsn(settings)
    run_id = uuid.uuid4().hex[:12]
    asyncio.run(_prepare(dsn, settings, run_id))
    console.print(
        f"[bold]omninode-lock demo[/]: {workers} worker processes, {seconds:g} s, "
        f"database {settings.safe_dsn()}, schema {settings.schema}, run {run_id}"
    )
    console.print(
        "locks: reports:nightly (exclusive), cache:config (shared readers / exclusive writer), "
        "pool:gpu (semaphore, permits=2)"
    )
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    start_at = time.time() + 1.5  # time for the spawned interpreters to start
    procs = [
        ctx.Process(
            target=worker_main,
            args=(
                WorkerArgs(i, dsn, settings.schema, run_id, start_at, start_at + seconds, 1000 + i),
                events,
            ),
            name=f"demo-w{i}",
            daemon=True,
        )
        for i in range(1, workers + 1)
    ]
    for proc in procs:
        proc.start()
    try:
        stats, violations, crashes = _collect(console, events, procs, start_at, live)
    finally:
        give_up = time.monotonic() + 10
        for proc in procs:
            proc.join(timeout=max(0.1, give_up - time.monotonic()))
            if proc.is_alive():
                proc.kill()
    max_seen, log_monotonic = asyncio.run(_verify(dsn, settings.schema, run_id))
    result = DemoResult(stats, violations, crashes, max_seen, log_monotonic)
    return _summary(console, result)


async def _prepare(dsn: str, settings: LockSettings, run_id: str) -> None:
    conn = await _connect(dsn, settings)
    try:
        await migrate(conn, settings.schema)
        for statement in SETUP_SQL:
            await conn.execute(statement)
        for lock in LOCKS:
            await conn.execute(
                f"INSERT INTO {DEMO_SCHEMA}.holders (run_id, lock_name) VALUES ($1, $2)", run_id, lock.name
            )
            await conn.execute(
                f"INSERT INTO {DEMO_SCHEMA}.resources (run_id, lock_name) VALUES ($1, $2)", run_id, lock.name
            )
    finally:
        await conn.close()


async def _connect(dsn: str, settings: LockSettings) -> asyncpg.Connection:
    """A connection, or a one-line error saying what failed (password hidden)."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=settings.connect_timeout)
    except (OSError, ValueError, OverflowError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise_connect_error(err, dsn, settings.connect_timeout)
    return conn


def _collect(
    console: Console, events: Any, procs: list[Any], start_at: float, live: bool
) -> tuple[dict[str, LockStats], list[str], list[str]]:
    stats: dict[str, LockStats] = {lock.name: LockStats() for lock in LOCKS}
    violations: list[str] = []
    crashes: list[str] = []
    done: set[int] = set()
    while len(done) < len(procs):
        try:
            ev = events.get(timeout=0.5)
        except queue.Empty:
            if all(not p.is_alive() for p in procs):
                crashes.extend(f"worker {p.name} died (exit code {p.exitcode})" for p in procs if p.exitcode)
                break
            continue
        kind = ev["kind"]
        if kind == "done":
            done.add(ev["worker"])
        elif kind == "crash":
            crashes.append(f"worker w{ev['worker']} crashed: {ev['error']}")
            console.print(f"[bold red]CRASH w{ev['worker']}: {ev['error']}[/]")
        else:
            line = _record(stats[ev["lock"]], ev, violations)
            if line and (live or kind == "violation"):
                console.print(f"{ev['t'] - start_at:7.3f}s  w{ev['worker']}  {line}")
    return stats, violations, crashes


def _record(st: LockStats, ev: dict[str, Any], violations: list[str]) -> str | None:
    """Fold one event into the lock's stats and return its live line (or None)."""
    kind, name, mode = ev["kind"], ev["lock"], ev["mode"]
    if kind == "wait":
        st.waits += 1
        held = ", ".join(ev["holders"]) or "-"
        return f"[yellow]WAIT [/]  {name:<16} {_shown(name, mode):<9} holders: {held}"
    if kind == "release":
        st.last_release = max(st.last_release, ev["t"])
        return None
    if kind == "violation":
        message = f"{name} (w{ev['worker']}, token {ev['token']}): {ev['problem']}"
        violations.append(message)
        return f"[bold white on red] VIOLATION [/] {message}"
    st.grants += 1
    st.wait_ms.append(ev["wait_ms"])
    st.tokens.append(ev["token"])
    st.tokens_by_worker[ev["worker"]].append(ev["token"])
    extra = ""
    queued_at = ev["queued_at"]
    if queued_at is not None:
        extra = f"  waited {ev['wait_ms']:.1f} ms"
        # a hand-off: the latest release of this lock after we queued, before our grant
        if queued_at <= st.last_release <= ev["t"]:
            handoff = (ev["t"] - st.last_release) * 1000
            st.handoff_ms.append(handoff)
            extra += f", hand-off {handoff:.1f} ms"
    return f"[green]GRANT[/]  {name:<16} {_shown(name, mode):<9} token={ev['token']:<6}{extra}"


def _shown(name: str, mode: str) -> str:
    return "permit" if BY_NAME[name].kind == "semaphore" else mode


async def _verify(dsn: str, schema: str, run_id: str) -> tuple[dict[str, tuple[int, int]], dict[str, bool]]:
    """Max holders seen (from the counter rows) and whether the engine's own grant log
    shows strictly increasing tokens per lock (grants of one name are serialised)."""
    check_schema(schema)
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            f"SELECT lock_name, max_readers, max_writers FROM {DEMO_SCHEMA}.holders WHERE run_id = $1",
            run_id,
        )
        max_seen = {r["lock_name"]: (r["max_readers"], r["max_writers"]) for r in rows}
        monotonic: dict[str, bool] = {}
        for lock in LOCKS:
            tokens = await conn.fetch(
                f'SELECT token FROM "{schema}".events WHERE lock_name = $1 '
                "AND event_type = 'lock_acquired' ORDER BY id",
                lock.name,
            )
            values = [t["token"] for t in tokens]
            monotonic[lock.name] = all(a < b for a, b in itertools.pairwise(values))
    finally:
        await conn.close()
    return max_seen, monotonic


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[int(q) - 1]:.1f}"


def _summary(console: Console, result: DemoResult) -> bool:
    table = Table(title="demo summary", title_justify="left")
    for column in (
        "lock",
        "grants",
        "waits",
        "max holders seen",
        "allowed",
        "token monotonic",
        "wait p50/p99 ms",
        "hand-off p50/p99 ms",
    ):
        table.add_column(column)
    violations = list(result.violations)
    for lock in LOCKS:
        st = result.stats[lock.name]
        readers, writers = result.max_seen.get(lock.name, (0, 0))
        seen = f"{writers} writer | {readers} readers" if lock.kind == "rw" else str(writers)
        if writers > (2 if lock.kind == "semaphore" else 1):
            violations.append(f"{lock.name}: {writers} exclusive holders seen at once")
        ok_tokens = (
            result.log_monotonic.get(lock.name, False)
            and len(set(st.tokens)) == len(st.tokens)
            and all(all(a < b for a, b in itertools.pairwise(t)) for t in st.tokens_by_worker.values())
        )
        if not ok_tokens:
            violations.append(f"{lock.name}: fencing tokens are not strictly increasing")
        if st.grants == 0:
            violations.append(f"{lock.name}: never granted (no progress)")
        table.add_row(
            lock.name,
            str(st.grants),
            str(st.waits),
            seen,
            lock.allowed,
            "yes" if ok_tokens else "[bold red]NO[/]",
            f"{_pct(st.wait_ms, 50)} / {_pct(st.wait_ms, 99)}",
            f"{_pct(st.handoff_ms, 50)} / {_pct(st.handoff_ms, 99)}",
        )
    console.print(table)
    console.print(
        "[dim]hand-off = waiter's grant time - releaser's release time, both time.time() in separate "
        "processes on this machine (fine for a local demo; not comparable across hosts).[/]"
    )
    problems = violations + result.crashes
    if problems:
        console.print(f"[bold white on red] {len(problems)} VIOLATION(S) [/]")
        for problem in problems:
            console.print(f"[bold red]  - {problem}[/]")
        return False
    console.print(
        "[bold green]invariants held: no violations[/] (exclusive <= 1, writer excludes readers, "
        "semaphore <= 2, fencing tokens strictly increasing)"
    )
    return True
