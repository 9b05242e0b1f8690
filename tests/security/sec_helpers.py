"""The security tests' service: tokens configured, every logger at DEBUG, and a DSN that
carries a password, all of whose output is kept so a test can grep every line of it."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from svc_helpers import clean_env, free_port

# the CLI with the root logger at DEBUG: asyncpg, uvicorn and our own events all log
DEBUG_CLI = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "from omninode_bridge.scripts import omninode_lock; sys.argv[0] = 'omninode-lock'; omninode_lock()"
)


def with_password(dsn: str, password: str) -> str:
    """``dsn`` with ``password`` in its user info (trust auth ignores it; logs must not)."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, parts.fragment))


class SecureService:
    """``omninode-lock serve`` at DEBUG with a client and an admin token."""

    def __init__(self, dsn: str, **env: str) -> None:
        self.password = f"pw-{secrets.token_hex(8)}"
        self.client_token = f"ct-{secrets.token_hex(12)}"
        self.admin_token = f"at-{secrets.token_hex(12)}"
        self.dsn = with_password(dsn, self.password)
        self.plain_dsn = dsn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(
            OMNINODE_CLEANUP_INTERVAL="3600",
            OMNINODE_RECHECK_INTERVAL="1",
            OMNINODE_CLIENT_TOKENS=self.client_token,
            OMNINODE_ADMIN_TOKENS=self.admin_token,
            **env,
        )
        self.log = tempfile.NamedTemporaryFile(prefix="omninode-sec-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: asyncio.subprocess.Process | None = None

    def headers(self, role: str = "client") -> dict[str, str]:
        token = self.client_token if role == "client" else self.admin_token
        return {"Authorization": f"Bearer {token}"}

    async def start(self) -> SecureService:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DEBUG_CLI, "--dsn", self.dsn, "serve", "--port", str(self.port),
            "--log-level", "debug",
            stdout=self.log, stderr=asyncio.subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.url) as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"service exited {self.proc.returncode}: {self.output()}")
                try:
                    if (await http.get("/health", timeout=2)).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"service did not become healthy: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def remove_log(self) -> None:
        os.unlink(self.log.name)
