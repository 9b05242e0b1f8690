"""Helpers shared by the generator acceptance tests (a uniquely named module, not conftest)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from omninode_bridge.codegen.pipeline import GenerationResult

# The command every user knows (it is in the product brief).
FLAGSHIP = (
    "Create NodeDistributedLockEffect for PostgreSQL-backed distributed locking with "
    "acquire/release/extend lock operations, automatic lease expiration, background cleanup task, "
    "connection pooling integration, metrics and health monitoring"
)

# (description, expected node type)
DESCRIPTIONS: list[tuple[str, str]] = [
    (FLAGSHIP, "effect"),
    ("Store user profiles in PostgreSQL with CRUD operations and TTL", "effect"),
    ("Cache session tokens in Redis with TTL expiry and cleanup", "effect"),
    ("Call the weather REST API to fetch forecasts with retry and circuit breaker", "effect"),
    ("Publish order events to a Kafka topic and consume them with retries", "effect"),
    ("Upload invoices to S3 object storage and download them by key", "effect"),
    ("Compute SHA-256 checksums of documents deterministically", "compute"),
    ("Calculate statistics such as mean, min and max of sensor readings", "compute"),
    ("Transform and normalize customer records into snake_case keys", "compute"),
    ("Validate signup forms and report missing required fields", "compute"),
    ("Aggregate order totals per customer from a stream of order events", "reducer"),
    ("Count page views per URL and sum durations over a time window", "reducer"),
    ("Merge and summarize metrics from many services into running totals", "reducer"),
    ("Orchestrate a multi-step customer onboarding workflow with retries", "orchestrator"),
    ("Coordinate a payment saga across inventory, billing and shipping steps", "orchestrator"),
    ("Run a data pipeline workflow that schedules extract, transform and load stages", "orchestrator"),
]


@dataclass
class Corpus:
    root: Path
    results: list[GenerationResult]
    suite: subprocess.CompletedProcess[str]
    coverage: dict[str, float]
    seconds: float


def tree(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` with its bytes (for byte-identical comparisons)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def copy_templates(dest: Path) -> Path:
    from omninode_bridge.codegen.render import TEMPLATE_DIR

    shutil.copytree(TEMPLATE_DIR, dest)
    return dest
