"""Running the lock service as users do: ``omninode-lock serve`` in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

CLI = str(Path(sys.executable).with_name("omninode-lock"))
SCHEMA = "omninode_locks"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def drop_database(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_databases = itertools.count()


@contextlib.asynccontextmanager
async def module_database(server_dsn: str, template_db: str, prefix: str) -> AsyncIterator[str]:
    """A fresh copy of the migrated template database for one test module."""
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield with_database(server_dsn, name)
    finally:
        await drop_database(admin, name)
        await admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNINODE_", "POSTGRES_"))}
    env.update(extra)
    return env


class Service:
    """One ``omninode-lock serve`` process; its stderr/stdout go to a file we can read."""

    def __init__(
        self,
        dsn: str,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        command: tuple[str, ...] = (),
        log_level: str = "info",
        keep_log: bool = False,
        **env: str,
    ) -> None:
        self.dsn = dsn
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(OMNINODE_CLEANUP_INTERVAL="3600", OMNINODE_RECHECK_INTERVAL="1", **env)
        self.log = tempfile.NamedTemporaryFile(prefix="omninode-svc-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: asyncio.subprocess.Process | None = None
        self.args = args
        self.command = command or (CLI,)  # the program and its leading arguments
        self.log_level = log_level
        self.keep_log = keep_log  # stop() leaves the log for the test to read; remove_log() ends it

    async def start(self, limit_s: float = 60, *, healthy: bool = True) -> Service:
        """Start and wait for /health to say 200 (or, with ``healthy=False``, to answer)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            "--dsn",
            self.dsn,
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            self.log_level,
            *self.args,
            stdout=self.log,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + limit_s
        async with httpx.AsyncClient(base_url=self.url) as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"service exited {self.proc.returncode}: {self.output()}")
                try:
                    status = (await http.get("/health", timeout=2)).status_code
                    if status == 200 or not healthy:
                        return self
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"service did not become healthy: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            # SIGINT: uvicorn shuts down gracefully, then re-raises it as KeyboardInterrupt,
            # so the process exits through Python (coverage of the subprocess is saved)
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if not self.keep_log:
            self.remove_log()

    def remove_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)


SNAPSHOT_TABLES = ("locks", "leases", "waiters", "events")


async def table_snapshot(dsn: str) -> dict[str, Any]:
    """Every row of the lock tables (the proof that a refused request changed nothing)."""
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, Any] = {}
        for table in SNAPSHOT_TABLES:
            rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.{table} ORDER BY 1")
            out[table] = [tuple(r.values()) for r in rows]
        return out
    finally:
        await conn.close()
