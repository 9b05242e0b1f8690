"""Acceptance: a generated effect node, run as a service, serves /health and /process on a
real PostgreSQL through its adapter (not an in-memory store)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from omninode_bridge.codegen.pipeline import GenerateOptions, generate


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_node_stores_in_postgres(tmp_path: Path, server_dsn: str) -> None:
    result = generate(
        GenerateOptions(
            description="Store shipping quotes in PostgreSQL and get them back by key",
            output_dir=tmp_path,
            run_tests=False,
            publish_event=False,
        )
    )
    assert result.success, result.error
    package = Path(result.node_dir).parent.name
    prefix = package.upper()
    port = _free_port()
    env = {**os.environ, f"{prefix}_POSTGRES_DSN": server_dsn, f"{prefix}_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"{package}.v1_0_0.node"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, health = _http("GET", f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the node did not start serving"
                time.sleep(0.1)
        assert status == 200 and health["status"] == "healthy" and health["backend"] == "up"
        ops = json.loads((Path(result.node_dir) / ".omninode-generate.json").read_text())["answers"][
            "operations"
        ]
        store = next(op for op in ops if op.startswith("store_"))
        read = next(op for op in ops if op.startswith("get_"))
        status, stored = _http(
            "POST",
            f"http://127.0.0.1:{port}/process",
            {"operation": store, "key": "q-1", "payload": {"eur": 4.5}},
        )
        assert status == 200 and stored["success"], stored
        status, got = _http("POST", f"http://127.0.0.1:{port}/process", {"operation": read, "key": "q-1"})
        assert status == 200 and got["result"]["value"] == {"eur": 4.5}
        status, bad = _http("POST", f"http://127.0.0.1:{port}/process", {"operation": "nope"})
        assert status == 400 and "error" in bad
        entity = package.removesuffix("_effect")
        with psycopg.connect(server_dsn) as conn:  # the value is in PostgreSQL, not in the process
            row = conn.execute(f"SELECT value FROM {entity}_store WHERE key = 'q-1'").fetchone()
        assert row is not None and row[0] == {"eur": 4.5}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
