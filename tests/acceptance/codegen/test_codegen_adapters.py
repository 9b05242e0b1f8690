"""Acceptance: generated effect nodes' real adapters pass their tests against real services.

PostgreSQL (the suite's server), Redis (127.0.0.1:6379), Kafka (Tansu), SMTP (aiosmtpd,
started by the generated test), S3 (moto's server, started by the generated test); MongoDB
is skipped by the generated test, with the reason, when no server is reachable.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from omninode_bridge.codegen.pipeline import GenerateOptions, generate

REDIS_URL = os.environ.get("OMNINODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _generate(description: str, out: Path) -> Path:
    result = generate(
        GenerateOptions(description=description, output_dir=out, run_tests=False, publish_event=False)
    )
    assert result.success, result.error
    return Path(result.node_dir)


def _run_adapter_tests(node_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        str(node_dir / "tests" / "test_adapters.py"),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        cwd=node_dir.parent.parent,
        env={**os.environ, **env},
    )
    return proc.returncode, proc.stdout + proc.stderr


def _passed(output: str) -> int:
    match = re.search(r"(\d+) passed", output)
    return int(match.group(1)) if match else 0


def test_postgres_effect_node_passes_its_adapter_tests(tmp_path: Path, server_dsn: str) -> None:
    node = _generate("Stores customer orders in postgres, lets support look them up and lease them", tmp_path)
    adapters = (node / "adapters.py").read_text()
    assert "class PostgresCustomerOrderAdapter" in adapters and "CREATE TABLE IF NOT EXISTS" in adapters
    code, out = _run_adapter_tests(node, {"OMNINODE_TEST_POSTGRES_DSN": server_dsn})
    assert code == 0, out[-3000:]
    assert "skipped" not in out and _passed(out) >= 3, out[-2000:]


@pytest.mark.parametrize(
    ("description", "adapter", "tests"),
    [
        ("Caches session tokens in redis and deletes stale ones", "RedisSessionTokenAdapter", 3),
        ("Acquire/release/extend locks in Redis with TTL", "RedisLockAdapter", 2),
    ],
)
def test_redis_effect_node_passes_its_adapter_tests(
    tmp_path: Path, description: str, adapter: str, tests: int
) -> None:
    if not _reachable("127.0.0.1", 6379) and "OMNINODE_TEST_REDIS_URL" not in os.environ:
        pytest.skip("no Redis at 127.0.0.1:6379 (set OMNINODE_TEST_REDIS_URL)")
    node = _generate(description, tmp_path)
    assert f"class {adapter}" in (node / "adapters.py").read_text()
    code, out = _run_adapter_tests(node, {"OMNINODE_TEST_REDIS_URL": REDIS_URL})
    assert code == 0, out[-3000:]
    assert "skipped" not in out and _passed(out) >= tests, out[-2000:]


def test_kafka_effect_node_passes_its_adapter_tests(tmp_path: Path, kafka_bootstrap: str) -> None:
    node = _generate("Publishes order events to kafka and consumes payment confirmations", tmp_path)
    assert "class KafkaOrderAdapter" in (node / "adapters.py").read_text()
    code, out = _run_adapter_tests(node, {"OMNINODE_TEST_KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert code == 0, out[-3000:]
    assert "skipped" not in out and _passed(out) >= 2, out[-2000:]


@pytest.mark.parametrize(
    ("description", "adapter"),
    [
        ("Sends transactional emails via SMTP", "SmtpTransactionalEmailAdapter"),
        ("Uploads invoice PDFs to an S3 bucket and downloads them again", "S3InvoicePdfAdapter"),
        ("Posts webhook events to a partner HTTP API and fetches their status", "HttpWebhookAdapter"),
    ],
)
def test_smtp_s3_and_http_nodes_pass_against_servers_their_tests_start(
    tmp_path: Path, description: str, adapter: str
) -> None:
    node = _generate(description, tmp_path)
    assert f"class {adapter}" in (node / "adapters.py").read_text()
    code, out = _run_adapter_tests(node, {})
    assert code == 0, out[-3000:]
    assert "skipped" not in out and _passed(out) >= 2, out[-2000:]


def test_mongodb_node_is_skipped_with_a_reason_when_no_server_runs(tmp_path: Path) -> None:
    node = _generate("Stores uploaded documents in MongoDB", tmp_path)
    assert "class MongoUploadedDocumentAdapter" in (node / "adapters.py").read_text()
    code, out = _run_adapter_tests(node, {"OMNINODE_TEST_MONGODB_URL": "mongodb://127.0.0.1:1"})
    assert code == 0, out[-3000:]
    assert "not reachable (store -> mongodb)" in out
