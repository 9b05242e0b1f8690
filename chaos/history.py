"""What a client records, the locks of the workload, and the fenced table it writes to.

One JSON object per line and per operation (see :mod:`chaos.checker` for how they are
read). Times ``t0``/``t1``/``m`` are the client's monotonic clock; ``acquired_at`` and
``expires_at`` are the database's clock as the server answered.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# (name, modes to pick from, permits): two one-permit locks, a reader/writer lock and a semaphore
LOCKS: tuple[tuple[str, tuple[str, ...], int | None], ...] = (
    ("ex-a", ("exclusive",), None),
    ("ex-b", ("exclusive",), None),
    ("rw", ("shared", "shared", "exclusive"), None),
    ("sem", ("exclusive",), 3),
)
PERMITS = {name: permits or 1 for name, _, permits in LOCKS}

SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS chaos;
CREATE TABLE IF NOT EXISTS chaos.writes (
    id        bigserial PRIMARY KEY,
    resource  text NOT NULL,
    token     bigint NOT NULL,
    lease_id  uuid NOT NULL,
    client    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos.lease_log (
    id          bigserial PRIMARY KEY,
    op          text NOT NULL,
    lease_id    uuid NOT NULL,
    name        text NOT NULL,
    mode        text NOT NULL,
    token       bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    logged_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION chaos.log_lease() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    INSERT INTO chaos.lease_log (op, lease_id, name, mode, token, acquired_at, expires_at)
    VALUES (TG_OP, r.lease_id, r.name, r.mode, r.token, r.acquired_at, r.expires_at);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS chaos_log ON omninode_locks.leases;
CREATE TRIGGER chaos_log AFTER INSERT OR UPDATE OR DELETE ON omninode_locks.leases
    FOR EACH ROW EXECUTE FUNCTION chaos.log_lease();
"""

WRITE_SQL = "INSERT INTO chaos.writes (resource, token, lease_id, client) VALUES ($1, $2, $3::uuid, $4)"


@dataclass(slots=True)
class Held:
    """A lease the client holds, by either driver."""

    lock: str
    mode: str
    lease_id: str
    token: int
    ttl: float
    deadline: float  # monotonic: the client's own estimate, erring early
    acquired_at: str  # database clock, ISO 8601
    expires_at: str
    lease: Any = None  # the library's Lease (lib driver only)


class Recorder:
    """Appends records to a JSONL file, flushed per line (a stopped client loses nothing)."""

    def __init__(self, path: Path, client: str, via: str) -> None:
        self.client, self.via = client, via
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, op: str, **fields: Any) -> None:
        fields.update(op=op, client=self.client, via=self.via)
        self._file.write(json.dumps(fields, default=str) + "\n")
        self._file.flush()

    def belief(self, lease_id: str, lock: str, deadline: float) -> bool:
        """Record that the client believes it holds ``lease_id`` now (if its deadline says so)."""
        m = time.monotonic()
        if deadline - time.monotonic() <= 0:
            return False
        self.write("belief", lease_id=lease_id, lock=lock, m=m)
        return True

    def close(self) -> None:
        self._file.close()


def read_history(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:  # the last line of a client killed mid-write
                        continue
    return out
