"""Production topologies on this machine, for the PgBouncer and failover tests and benches.

* :class:`PgBouncer` — Debian's ``pgbouncer`` in ``pool_mode = transaction`` in front of
  a PostgreSQL server (TCP or Unix socket), on a free loopback port, with its ini and
  userlist in a temporary folder.
* :class:`ReplicaPair` — a primary and a synchronous streaming standby made with the
  system binaries (``initdb``, ``pg_basebackup``, ``pg_ctl``) in a temporary folder, on
  two free loopback ports; :meth:`ReplicaPair.fail_over` stops the primary (immediate)
  and promotes the standby.

PostgreSQL and PgBouncer refuse to run as root: as root, both run as the ``postgres``
system user (PgBouncer as the owner of the server's socket folder when it connects
through one), with their folders owned by it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from omninode_bridge.core.dsn import parse_dsn

RUN_AS = "postgres"  # the unprivileged user when we are root


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_pgbouncer() -> str | None:
    """The ``pgbouncer`` binary (Debian puts it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def pg_bindir() -> Path | None:
    """The newest system PostgreSQL's bin folder with initdb, pg_basebackup, pg_ctl and
    psql (``OMNINODE_PG_BINDIR`` overrides), or None."""
    configured = os.environ.get("OMNINODE_PG_BINDIR")
    found = [Path(configured)] if configured else []
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        versions = [p for p in base.iterdir() if p.name.isdigit()]
        found += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    for folder in found:
        if all(
            (folder / tool).is_file() for tool in ("initdb", "pg_basebackup", "pg_ctl", "postgres", "psql")
        ):
            return folder
    return None


def missing_for_failover() -> str | None:
    """Why a replica pair cannot be made here (None when it can)."""
    if pg_bindir() is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_basebackup, pg_ctl, psql) in /usr/lib/postgresql/*/bin"
        )
    if _root():
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _own(path: Path, user: str | None) -> None:
    """Hand ``path`` to ``user`` (when we are root and it is someone else)."""
    if user is None or not _root():
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of the server of ``server_dsn``.

    Every database name is forwarded (``* =``), so per-test databases work; clients
    authenticate with ``trust`` (the user must be in the userlist, which has it).
    ``dsn_for(database)`` gives the URL through PgBouncer.
    """

    def __init__(self, server_dsn: str, *, pool_size: int = 20, max_client_conn: int = 400) -> None:
        self.params = parse_dsn(server_dsn)
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.user = self.params.get("user") or "postgres"
        self.port = 0
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _run_user(self) -> str | None:
        if not _root():
            return None
        host = self.params.get("host", "")
        if host.startswith("/"):  # reach the socket: run as the folder's owner
            return pwd.getpwuid(os.stat(host).st_uid).pw_name
        return RUN_AS

    def ini(self) -> str:
        host = self.params.get("host") or "127.0.0.1"
        port = self.params.get("port") or "5432"
        assert self.folder is not None
        return "\n".join(
            [
                "[databases]",
                f"* = host={host} port={port}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.folder / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                f"max_client_conn = {self.max_client_conn}",
                "server_reset_query =",
                "ignore_startup_parameters = extra_float_digits",
                f"logfile = {self.folder / 'pgbouncer.log'}",
                f"pidfile = {self.folder / 'pgbouncer.pid'}",
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> PgBouncer:
        binary = find_pgbouncer()
        if binary is None:
            raise FileNotFoundError("pgbouncer is not installed")
        user = self._run_user()
        self.folder = Path(tempfile.mkdtemp(prefix="omninode-pgbouncer-"))
        _own(self.folder, user)
        self.port = free_port()
        (self.folder / "userlist.txt").write_text(f'"{self.user}" ""\n')
        (self.folder / "pgbouncer.ini").write_text(self.ini())
        for name in ("userlist.txt", "pgbouncer.ini"):
            _own(self.folder / name, user)
        self._proc = subprocess.Popen(
            [binary, str(self.folder / "pgbouncer.ini")],
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(self.port, timeout, self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = (self.folder or Path("/nonexistent")) / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


PRIMARY_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
wal_level = replica
max_wal_senders = 4
wal_keep_size = 64MB
hot_standby = on
synchronous_commit = on
synchronous_standby_names = '{standby}'
# test speed only: the failover here is an immediate stop, the OS keeps its cache
fsync = off
shared_buffers = 32MB
max_connections = 120
"""


class ReplicaPair:
    """A primary and a synchronous standby (``application_name`` ``standby1``).

    Commits on the primary wait for the standby's flush (``synchronous_standby_names``),
    so whatever a client was told committed is on the standby when the primary dies.
    """

    STANDBY = "standby1"

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.user = RUN_AS if _root() else None
        self.folder: Path | None = None
        self.primary_port = 0
        self.standby_port = 0
        self.promoted = False
        self.primary_down = threading.Event()  # set once the primary is stopped

    # -- running the binaries as the server's user --------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        assert self.bindir is not None
        done = subprocess.run(
            [str(self.bindir / tool), *args],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        return done.stdout

    def _path(self, name: str) -> Path:
        assert self.folder is not None
        return self.folder / name

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        self._run("pg_ctl", *args, timeout=timeout)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> ReplicaPair:
        reason = missing_for_failover()
        if reason:
            raise FileNotFoundError(reason)
        self.folder = Path(tempfile.mkdtemp(prefix="omninode-failover-"))
        _own(self.folder, self.user)
        self.primary_port, self.standby_port = free_port(), free_port()
        try:
            self._start_primary()
            self._start_standby()
            self._wait_sync()
        except BaseException:
            self.stop()
            raise
        return self

    _template: Path | None = None  # one initdb per process, copied for every pair

    def _initdb_template(self) -> Path:
        cls = type(self)
        if cls._template is None or not (cls._template / "pgdata" / "PG_VERSION").exists():
            folder = Path(tempfile.mkdtemp(prefix="omninode-initdb-"))
            _own(folder, self.user)
            self._run(
                "initdb",
                "-D",
                str(folder / "pgdata"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--wal-segsize=1",  # 1 MB WAL files: less to copy and delete per pair
            )
            atexit.register(shutil.rmtree, folder, True)
            cls._template = folder
        return cls._template / "pgdata"

    def _start_primary(self) -> None:
        primary = self._path("primary")
        subprocess.run(["cp", "-a", str(self._initdb_template()), str(primary)], check=True, user=self.user)
        conf = PRIMARY_CONF.format(port=self.primary_port, sockets=self.folder, standby=self.STANDBY)
        with (primary / "postgresql.conf").open("a") as f:
            f.write(conf)
        self._pg_ctl("start", "-w", "-D", str(primary), "-l", str(self._path("primary.log")))

    def _start_standby(self) -> None:
        standby = self._path("standby")
        self._run(
            "pg_basebackup",
            "-D", str(standby),
            "-h", "127.0.0.1",
            "-p", str(self.primary_port),
            "-U", "postgres",
            "-X", "stream",
            "-c", "fast",
            "-R",
        )  # fmt: skip
        with (standby / "postgresql.auto.conf").open("a") as f:
            f.write(
                f"port = {self.standby_port}\n"
                f"primary_conninfo = 'host=127.0.0.1 port={self.primary_port} user=postgres "
                f"application_name={self.STANDBY}'\n"
                # once promoted it has no standby of its own: commits must not wait for one
                "synchronous_standby_names = ''\n"
                # notice the lost primary (and a promotion) in 0.2 s rather than 5 s
                "wal_retrieve_retry_interval = '200ms'\n"
            )
        self._pg_ctl("start", "-w", "-D", str(standby), "-l", str(self._path("standby.log")))

    def _wait_sync(self, timeout: float = 30.0) -> None:
        """Until the primary reports the standby as its synchronous one."""
        deadline = time.monotonic() + timeout
        query = f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{self.STANDBY}'"
        while time.monotonic() < deadline:
            state = self.psql(self.primary_port, query).strip()
            if state == "sync":
                return
            time.sleep(0.1)
        raise TimeoutError(f"the standby is not synchronous after {timeout:g} s")

    def psql(self, port: int, query: str, database: str = "postgres") -> str:
        """One query through the system ``psql`` (unaligned, tuples only)."""
        assert self.bindir is not None
        psql = str(self.bindir / "psql")
        done = subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-Atc", query],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def dsn(self, database: str = "postgres") -> str:
        """The multi-host DSN clients use: whichever of the two accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
            f"/{database}?target_session_attrs=read-write"
        )

    def primary_dsn(self, database: str = "postgres") -> str:
        port = self.standby_port if self.promoted else self.primary_port
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def stop_primary(self) -> None:
        """Kill the primary as a crash would (``pg_ctl stop -m immediate``)."""
        self._pg_ctl("stop", "-D", str(self._path("primary")), "-m", "immediate", "-w")
        self.primary_down.set()

    def promote(self) -> None:
        """Promote the standby and wait until it accepts writes."""
        self._pg_ctl("promote", "-D", str(self._path("standby")), "-w")
        self.promoted = True

    def fail_over(self, promote_delay: float = 0.0) -> dict[str, float]:
        """Stop the primary (immediate), wait ``promote_delay`` s (no primary at all),
        promote the standby; the steps' durations."""
        started = time.monotonic()
        self.stop_primary()
        stopped = time.monotonic()
        time.sleep(promote_delay)
        promoting = time.monotonic()
        self.promote()
        return {
            "stop_s": stopped - started,
            "no_primary_s": time.monotonic() - stopped,
            "promote_s": time.monotonic() - promoting,
        }

    def logs(self) -> dict[str, str]:
        out: dict[str, Any] = {}
        for name in ("primary.log", "standby.log"):
            path = self._path(name) if self.folder else None
            out[name] = path.read_text(errors="replace")[-4000:] if path and path.exists() else ""
        return out

    def stop(self) -> None:
        if self.folder is None:
            return
        for name in ("primary", "standby"):
            if (self._path(name) / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self._pg_ctl("stop", "-D", str(self._path(name)), "-m", "immediate", "-w", timeout=30)
        # in the background: deleting two clusters takes seconds on a busy disk
        subprocess.Popen(
            ["rm", "-rf", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.folder = None

    def __enter__(self) -> ReplicaPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
