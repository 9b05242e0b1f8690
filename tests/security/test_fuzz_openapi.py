"""HTTP fuzzing from the service's own OpenAPI schema (schemathesis), over real HTTP.

Every documented operation gets valid (positive) and invalid (negative) requests with an
admin token. Each answer must be no 5xx, of a status, content type and body the schema
documents, and every invalid request must be refused. Every refusal of input (400, 401,
403, 404, 405, 413, 422) must leave the lock tables exactly as they were: they are
snapshotted before and after each such call. (A 409 from a busy lock is not refused
input: trying a lock legitimately touches its row.)
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from svc_helpers import CLI, SCHEMA, SNAPSHOT_TABLES, clean_env, free_port

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

STREAMS = ("/v1/events/stream", "/dashboard/stream")  # endless by design: not fuzzed
REFUSED_INPUT = {400, 401, 403, 404, 405, 413, 422}
EXAMPLES = int(os.environ.get("OMNINODE_FUZZ_EXAMPLES", "40"))  # per operation and mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Served:
    """``omninode-lock serve`` in a subprocess, with an admin token (sync, for hypothesis)."""

    def __init__(self, dsn: str) -> None:
        self.token = f"fz-{secrets.token_hex(12)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = clean_env(OMNINODE_CLEANUP_INTERVAL="3600", OMNINODE_ADMIN_TOKENS=self.token)
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"omninode-fuzz-{self.port}.log"
        self.proc = subprocess.Popen(
            [CLI, "--dsn", dsn, "serve", "--port", str(self.port), "--log-level", "warning"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.unlink(missing_ok=True)


@pytest.fixture
def served(dsn: str) -> Iterator[Served]:
    svc = Served(dsn)
    yield svc
    svc.stop()


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the lock tables, every column."""
    out = {}
    for table in SNAPSHOT_TABLES:
        out[table] = conn.execute(f"SELECT * FROM {SCHEMA}.{table} ORDER BY 1").fetchall()
    return out


def _tame(case: Any) -> None:
    """Long polls answer at once: a valid ``wait`` (up to an hour for an acquire, a minute
    for events) becomes 0.05 s, still valid; an invalid one is left for the server to refuse."""
    for where, longest in ((case.body, 3600.0), (case.query, 60.0)):
        if isinstance(where, dict):
            wait = where.get("wait")
            if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 < wait <= longest:
                where["wait"] = 0.05


def _fuzz(
    operation: Any, mode: GenerationMode, served: Served, conn: psycopg.Connection[Any]
) -> dict[int, int]:
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {served.token}"}
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        _tame(case)
        before = _snapshot(conn)
        response = case.call(base_url=served.url, headers=headers, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=checks, headers=headers)
        if response.status_code in REFUSED_INPUT:
            assert _snapshot(conn) == before, f"refused input changed the tables: {case.as_curl_command()}"

    try:
        one()
    except Unsatisfiable:  # nothing to negate (an operation without parameters or body)
        assert mode is GenerationMode.NEGATIVE, f"no valid request could be generated for {operation.path}"
    return statuses


@pytest.mark.timeout(600)  # ~15-50 s here; generous for a loaded CI machine
def test_fuzzed_requests_never_fail_the_server_nor_change_state_when_refused(
    served: Served, dsn: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    seen: dict[str, dict[int, int]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in STREAMS:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                seen[f"{mode.value} {operation.method.upper()} {operation.path}"] = _fuzz(
                    operation, mode, served, conn
                )
    print("\nstatus codes per operation:", *(f"  {k}: {v}" for k, v in sorted(seen.items())), sep="\n")
    assert len(seen) >= 2 * 10, f"the schema lost operations: {sorted(seen)}"
    assert served.proc.poll() is None, "the service died"
    # the fuzzing reached the engine, not only the validators
    assert any(200 in v for k, v in seen.items() if "acquire" in k)
