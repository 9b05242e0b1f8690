"""Lock service benchmark: ``python -m bench.service [--dsn DSN] [--seconds S]``.

In one run, against one PostgreSQL (default: embedded under ``.omninode/bench-pgdata``):

* HTTP acquire+release pairs/s and p95 at 1, 8 and 32 clients (each client its own
  lock name and its own keep-alive connection), next to the library (:class:`LockClient`)
  called directly with the same concurrency, interleaved in rounds (the order swapped
  every round), with the per-round ratios and the CPU time per pair of the service
  process (HTTP + engine) and of the library's process (engine alone);
* the long-poll hand-off over HTTP: release through one request -> the queued
  acquire's response arrives (p50/p99);
* 1,000 concurrent long-poll waiters on one service instance: peak database
  connections of that instance (pool of 2 + its listener) and the time to drain the
  queue (each waiter, once granted, releases at once);
* the service process's peak RSS (VmHWM).

``--base REV`` also starts the service of git revision ``REV`` (its ``src/`` from
``git archive``, on this virtualenv) and puts its HTTP pairs/s into the same rounds:
a before/after of the service on the same machine, database and minute.

The service runs as ``omninode-lock serve`` in a subprocess, as users run it. The
HTTP client is a minimal keep-alive HTTP/1.1 client (below) so the numbers measure
the service, not a heavy client library sharing the same two cores.

Writes ``bench/results/service.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.engine import percentile
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCHEMA = "omninode_svcbench"
CLI = str(Path(sys.executable).with_name("omninode-lock"))


class Http:
    """One keep-alive HTTP/1.1 connection: JSON in, (status, JSON) out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None

    async def open(self) -> Http:
        self._r, self._w = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.request("POST", path, json.dumps(body).encode())

    async def request(self, method: str, path: str, data: bytes = b"") -> tuple[int, Any]:
        assert self._r is not None and self._w is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self._w.write(head.encode() + data)
        status_line = await self._r.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self._r.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self._r.readexactly(length)
        return status, json.loads(payload) if payload else None

    async def close(self) -> None:
        if self._w is not None:
            self._w.close()
            with contextlib.suppress(Exception):
                await self._w.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ``omninode-lock`` of another source tree (``--base``): its src/ first on sys.path
BASE_CLI = "import sys; from omninode_bridge.scripts import omninode_lock; sys.argv[0] = 'omninode-lock'; omninode_lock()"


class ServiceProcess:
    def __init__(self, dsn: str, pool_max: int, source: Path | None = None, **extra_env: str) -> None:
        self.dsn, self.port = dsn, free_port()
        self.command = [CLI] if source is None else [sys.executable, "-c", BASE_CLI]
        if source is not None:
            extra_env = {**extra_env, "PYTHONPATH": str(source / "src")}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNINODE_", "POSTGRES_"))}
        env.update(
            OMNINODE_LOCK_SCHEMA=SCHEMA,
            OMNINODE_POOL_MIN="1",
            OMNINODE_POOL_MAX=str(pool_max),
            OMNINODE_CLEANUP_INTERVAL="3600",
        )
        env.update(extra_env)
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> ServiceProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, "--dsn", self.dsn, "serve", "--port", str(self.port), "--log-level", "warning",
            env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(600):
            with contextlib.suppress(OSError, ValueError, IndexError):
                http = await Http(self.port).open()
                status, _ = await http.request("GET", "/health")
                await http.close()
                if status == 200:
                    return self
            await asyncio.sleep(0.1)
        raise RuntimeError("the service did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def http_pairs(port: int, clients: int, seconds: float, tag: str) -> tuple[int, list[float]]:
    conns = [await Http(port).open() for _ in range(clients)]
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def one(i: int, http: Http) -> int:
        n = 0
        name = f"/v1/locks/h{tag}-{clients}-{i}"
        while time.perf_counter() < stop:
            t = time.perf_counter()
            status, lease = await http.post(name + "/acquire", {"owner_id": f"c{i}", "ttl": 30})
            assert status == 200, lease
            status, _ = await http.post(name + "/release", {"lease_id": lease["lease_id"]})
            assert status == 200
            latencies.append(time.perf_counter() - t)
            n += 1
        return n

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(conns))))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.close()
    return round(total / elapsed), latencies


async def lib_pairs(locks: LockClient, clients: int, seconds: float, tag: str) -> int:
    stop = time.perf_counter() + seconds

    async def one(i: int) -> int:
        n = 0
        while time.perf_counter() < stop:
            lease = await locks.acquire(f"l{tag}-{clients}-{i}", f"c{i}", ttl=30)
            await locks.release(lease)
            n += 1
        return n

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(one(i) for i in range(clients))))
    return round(total / (time.perf_counter() - started))


async def handoff(port: int, rounds: int) -> list[float]:
    """Release through one connection -> the long-polling acquire on another answers."""
    holder, waiter = await Http(port).open(), await Http(port).open()
    times: list[float] = []
    status, lease = await holder.post("/v1/locks/handoff/acquire", {"owner_id": "a", "ttl": 30})
    assert status == 200, lease
    for i in range(rounds):
        owner = "b" if i % 2 == 0 else "a"
        pending = asyncio.ensure_future(
            waiter.post("/v1/locks/handoff/acquire", {"owner_id": owner, "wait": 10})
        )
        await asyncio.sleep(0.02)  # let it queue
        t = time.perf_counter()
        status, _ = await holder.post("/v1/locks/handoff/release", {"lease_id": lease["lease_id"]})
        status, lease = await pending
        times.append(time.perf_counter() - t)
        assert status == 200, lease
        holder, waiter = waiter, holder
    await holder.post("/v1/locks/handoff/release", {"lease_id": lease["lease_id"]})
    await holder.close()
    await waiter.close()
    return times


def median(values: list[Any]) -> Any:
    return sorted(values)[len(values) // 2]


class ProcessCpu:
    """CPU time (user + system) a process spends from now on, per unit of work.

    For HTTP it is the service process (HTTP handling plus the engine calls); for the
    library it is this process (the engine calls alone, no HTTP client in the way)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self.now()

    def now(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def ms_per(self, units: float) -> float:
        return round((self.now() - self.start) * 1000 / max(units, 1), 3)


CROWD_APP = "omninode-svcbench-crowd"


def tagged(dsn: str, application_name: str) -> str:
    """``dsn`` with an application_name, so the service's own connections can be counted."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={application_name}"


async def db_connections(admin: asyncpg.Connection) -> int:
    """Connections of the crowd's service instance (pool and listener), by application_name."""
    return int(
        await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", CROWD_APP)
    )


async def thousand_waiters(
    dsn: str, n: int, recheck: float | None = None, cap_s: float = 90
) -> dict[str, Any]:
    """``n`` long polls queued on one instance (pool of 2): connections used, drain time.

    ``recheck`` sets the engine's safety re-check interval (None: its default); the
    drain is given ``cap_s`` seconds, and how many were served by then is reported."""
    extra = {} if recheck is None else {"OMNINODE_RECHECK_INTERVAL": str(recheck)}
    svc = await ServiceProcess(tagged(dsn, CROWD_APP), pool_max=2, **extra).start()
    admin = await asyncpg.connect(dsn)
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, await db_connections(admin))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    try:
        holder = await Http(svc.port).open()
        status, lease = await holder.post("/v1/locks/crowd/acquire", {"owner_id": "holder", "ttl": 600})
        assert status == 200, lease
        conns = [await Http(svc.port).open() for _ in range(n)]
        granted_at: list[float] = []

        async def wait_then_release(i: int, http: Http) -> None:
            status, got = await http.post(
                "/v1/locks/crowd/acquire", {"owner_id": f"w{i}", "wait": 600, "ttl": 60}
            )
            assert status == 200, got
            granted_at.append(time.perf_counter())
            status, _ = await http.post("/v1/locks/crowd/release", {"lease_id": got["lease_id"]})
            assert status == 200

        waiters = [asyncio.ensure_future(wait_then_release(i, c)) for i, c in enumerate(conns)]
        queued_by = time.perf_counter()
        while True:
            status, info = await holder.request("GET", "/v1/locks/crowd")
            if len(info["waiters"]) >= n:
                break
            await asyncio.sleep(0.1)
        queued_s = time.perf_counter() - queued_by
        await asyncio.sleep(1.0)  # a steady state: everyone asleep on the shared listener
        t = time.perf_counter()
        await holder.post("/v1/locks/crowd/release", {"lease_id": lease["lease_id"]})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waiters), cap_s)
        drain = time.perf_counter() - t
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        for c in [holder, *conns]:
            await c.close()
        rss = svc.peak_rss_mb()
    finally:
        sampling = False
        await sampler
        await admin.close()
        await svc.stop()
    return {
        "waiters": n,
        "recheck_interval_s": recheck or LockSettings().recheck_interval,
        "served": len(granted_at),
        "db_connections": peak,
        "drain_s": round(drain, 3) if len(granted_at) == n else None,
        "queue_fill_s": round(queued_s, 3),
        "handoffs_per_s": round(len(granted_at) / drain),
        "rss_mb": round(rss, 1),
    }


def export_tree(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` under ``into`` (``git archive``, no checkout)."""
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


async def main(
    dsn: str | None, seconds: float, rounds: int, waiters: int, base: str | None = None
) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    dsn = dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await admin.close()
    settings = LockSettings(schema=SCHEMA, pool_min=2, pool_max=10, cleanup_interval=3600)
    svc = await ServiceProcess(dsn, pool_max=10).start()
    results: dict[str, Any] = {"concurrency": {}}
    tmp = tempfile.TemporaryDirectory(prefix="omninode-svcbench-base-")
    old = None
    if base is not None:  # the service of another revision, in the same run on the same database
        old = await ServiceProcess(dsn, pool_max=10, source=export_tree(base, Path(tmp.name))).start()
        results["base"] = {"rev": base, "concurrency": {}}
    sides = ["http", "lib"] + (["base"] if old is not None else [])
    try:
        async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
            for clients in (1, 8, 32):
                http_rates, lib_rates, lat, ratios = [], [], [], []
                http_cpu, lib_cpu, base_rates, base_cpu = [], [], [], []
                for r in range(rounds):
                    # interleaved, and the order rotated every round, so drift on a shared
                    # machine (and whoever runs first) hits every side alike
                    for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                        if side == "base" and old is not None:
                            cpu = ProcessCpu(old.pid)
                            rate, _ = await http_pairs(old.port, clients, seconds, f"b{r}")
                            base_cpu.append(cpu.ms_per(rate * seconds))
                            base_rates.append(rate)
                        elif side == "http":
                            cpu = ProcessCpu(svc.pid)
                            rate, latencies = await http_pairs(svc.port, clients, seconds, f"{r}")
                            http_cpu.append(cpu.ms_per(rate * seconds))
                            http_rates.append(rate)
                            lat.extend(latencies)
                        else:
                            cpu = ProcessCpu(os.getpid())
                            rate = await lib_pairs(locks, clients, seconds, f"{r}")
                            lib_cpu.append(cpu.ms_per(rate * seconds))
                            lib_rates.append(rate)
                    ratios.append(round(http_rates[-1] / max(1, lib_rates[-1]), 2))
                results["concurrency"][str(clients)] = {
                    "http_pairs_s": median(http_rates),
                    "http_p95_ms": round(percentile(lat, 95) * 1000, 2),
                    "lib_pairs_s": median(lib_rates),
                    "ratio_by_round": ratios,
                    "cpu_ms_per_pair": {"service": median(http_cpu), "library": median(lib_cpu)},
                }
                if old is not None:
                    results["base"]["concurrency"][str(clients)] = {
                        "http_pairs_s": median(base_rates),
                        "http_vs_lib": round(median(base_rates) / max(1, median(lib_rates)), 2),
                        "cpu_ms_per_pair": median(base_cpu),
                    }
        times = await handoff(svc.port, 200)
        results["handoff_p50_ms"] = round(percentile(times, 50) * 1000, 2)
        results["handoff_p99_ms"] = round(percentile(times, 99) * 1000, 2)
        rss_main = svc.peak_rss_mb()
    finally:
        await svc.stop()
        if old is not None:
            await old.stop()
        tmp.cleanup()
    # the engine's default safety re-check (every 2 s per waiter) and a slower one
    crowds = [await thousand_waiters(dsn, waiters), await thousand_waiters(dsn, waiters, recheck=30)]
    keys = ("db_connections", "drain_s", "served", "recheck_interval_s", "queue_fill_s", "handoffs_per_s")
    results["waiters_1000"] = {k: crowds[0][k] for k in keys}
    results["waiters_1000_recheck_30s"] = {k: crowds[1][k] for k in keys}
    results["rss_mb"] = round(max(rss_main, *(c["rss_mb"] for c in crowds)), 1)
    results["rss_mb_by_phase"] = {
        "throughput": round(rss_main, 1),
        "waiters_1000": [c["rss_mb"] for c in crowds],
    }
    ratio = results["concurrency"]["8"]["http_pairs_s"] / max(1, results["concurrency"]["8"]["lib_pairs_s"])
    results["http_vs_lib_at_8"] = round(ratio, 2)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    results["settings"] = {"seconds": seconds, "rounds": rounds, "waiters": waiters, "workers": 1}
    return results


def show(results: dict[str, Any]) -> None:
    console = Console(highlight=False, width=max(Console().width, 120))
    table = Table(title="lock service vs library (acquire+release pairs)", title_justify="left")
    columns = ("clients", "HTTP pairs/s", "HTTP p95 ms", "library pairs/s", "HTTP / library")
    for col in (*columns, "by round", "CPU ms/pair service | library"):
        table.add_column(col, justify="right")
    for clients, row in results["concurrency"].items():
        ratio = row["http_pairs_s"] / max(1, row["lib_pairs_s"])
        cpu = row["cpu_ms_per_pair"]
        table.add_row(
            clients,
            str(row["http_pairs_s"]),
            str(row["http_p95_ms"]),
            str(row["lib_pairs_s"]),
            f"{ratio:.2f}",
            " ".join(f"{r:.2f}" for r in row["ratio_by_round"]),
            f"{cpu['service']:.2f} | {cpu['library']:.2f}",
        )
    console.print(table)
    console.print(
        f"hand-off over HTTP: p50 {results['handoff_p50_ms']} ms, p99 {results['handoff_p99_ms']} ms"
    )
    for key in ("waiters_1000", "waiters_1000_recheck_30s"):
        w = results[key]
        drained = f"drained in {w['drain_s']} s" if w["drain_s"] is not None else f"only {w['served']} served"
        console.print(
            f"{w['served']}/{results['settings']['waiters']} long-poll waiters on one instance, re-check every "
            f"{w['recheck_interval_s']} s: {w['db_connections']} DB connections, {drained} "
            f"({w['handoffs_per_s']} hand-offs/s)"
        )
    console.print(f"service peak RSS: {results['rss_mb']} MB")
    if "base" in results:
        for clients, row in results["base"]["concurrency"].items():
            console.print(
                f"base {results['base']['rev']} at {clients} clients: {row['http_pairs_s']} HTTP pairs/s, "
                f"HTTP / library {row['http_vs_lib']}, service CPU {row['cpu_ms_per_pair']:.2f} ms/pair"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument(
        "--base", default=None, help="also run the service of this git revision, interleaved (before/after)"
    )
    args = parser.parse_args()
    out = asyncio.run(main(args.dsn, args.seconds, args.rounds, args.waiters, args.base))
    show(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'service.json'}")
