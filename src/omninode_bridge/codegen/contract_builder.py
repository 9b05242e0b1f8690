"""Stage 3: build the node's ONEX v2.0 contract from the answers and validate it.

The contract is the source of truth the templates and the compliance rules
read: operations, configuration defaults, events, performance targets.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omninode_bridge import __version__
from omninode_bridge.codegen.operations import LOCK_KINDS, kind_of, operation_specs
from omninode_bridge.codegen.spec import NodeAnswers
from omninode_bridge.core.contract import validate_contract

TOPIC_PREFIX = "dev.omninode-bridge"
BACKEND_DESCRIPTIONS = {
    "postgres": "PostgreSQL database",
    "mysql": "MySQL database",
    "mongodb": "MongoDB database",
    "redis": "Redis cache",
    "memcached": "Memcached cache",
    "kafka": "Kafka-compatible event bus",
    "rabbitmq": "RabbitMQ broker",
    "queue": "message queue",
    "http": "HTTP API",
    "grpc": "gRPC service",
    "s3": "S3-compatible object storage",
    "smtp": "SMTP mail server",
    "elasticsearch": "Elasticsearch cluster",
    "consul": "Consul agent",
    "vault": "Vault server",
    "filesystem": "local file system",
}


def configuration(answers: NodeAnswers) -> dict[str, dict[str, Any]]:
    """Configuration keys with defaults, descriptions and their Python typing."""
    features = set(answers["features"])
    items: dict[str, dict[str, Any]] = {
        "timeout_ms": _item(5000, "int", "operation timeout in milliseconds", ", gt=0"),
        "topic_prefix": _item(TOPIC_PREFIX, "str", "prefix of the node's event topics", ""),
    }
    if answers["node_type"] == "orchestrator":
        retry = "retry" in features
        step_timeout = float(answers.get("step_timeout_s") or 30.0)
        items["step_timeout_s"] = _item(step_timeout, "float", "timeout of each step in seconds", ", gt=0")
        items["step_max_retries"] = _item(3 if retry else 0, "int", "retries of a failed step", ", ge=0")
        items["step_backoff_ms"] = _item(
            100 if retry else 0, "int", "first retry delay; doubles per retry, with jitter", ", ge=0"
        )
        items["timeout_ms"] = _item(
            int(step_timeout * 1000 * 10), "int", "timeout of a whole request in milliseconds", ", gt=0"
        )
    if answers["node_type"] == "effect":
        retry = "retry" in features
        items["max_retries"] = _item(3 if retry else 0, "int", "retries of failed backend calls", ", ge=0")
        items["retry_backoff_ms"] = _item(
            50 if retry else 0, "int", "first retry delay; doubles per retry, with jitter", ", ge=0"
        )
        ttl = 300.0 if "ttl" in features else None
        items["default_ttl_seconds"] = _item(ttl, "float | None", "TTL of stored values (null: none)", "")
        if any(kind_of("effect", op) in LOCK_KINDS for op in answers["operations"]):
            items["lock_ttl_seconds"] = _item(30.0, "float", "lease TTL when a request gives none", ", gt=0")
        if "pooling" in features:
            items["pool_max_size"] = _item(10, "int", "connections in the backend adapter's pool", ", ge=1")
        items.update(adapter_settings(answers))
        if "circuit_breaker" in features:
            items["circuit_breaker_threshold"] = _item(5, "int", "failures in a row that open it", ", ge=1")
            items["circuit_breaker_reset_s"] = _item(30.0, "float", "seconds it stays open", ", gt=0")
    return items


# Connection settings of each real adapter (read from the container config / environment).
ADAPTER_SETTINGS: dict[str, list[tuple[str, Any, str, str]]] = {
    "postgres": [("postgres_dsn", "postgresql://postgres@localhost:5432/postgres", "str", "PostgreSQL DSN")],
    "redis": [("redis_url", "redis://localhost:6379/0", "str", "Redis URL")],
    "kafka": [("kafka_bootstrap_servers", "localhost:9092", "str", "Kafka bootstrap servers")],
    "http": [("http_base_url", "http://localhost:8000", "str", "base URL of the HTTP API")],
    "smtp": [
        ("smtp_host", "localhost", "str", "SMTP server host"),
        ("smtp_port", 25, "int", "SMTP server port"),
        ("smtp_sender", "noreply@localhost", "str", "From address of sent mail"),
    ],
    "s3": [
        ("s3_bucket", "omninode", "str", "S3 bucket"),
        ("s3_endpoint_url", None, "str | None", "S3 endpoint URL (null: AWS)"),
    ],
    "mongodb": [("mongodb_url", "mongodb://localhost:27017", "str", "MongoDB URL")],
}


def adapter_settings(answers: NodeAnswers) -> dict[str, dict[str, Any]]:
    """Connection settings for the adapters of the node's named backends."""
    items: dict[str, dict[str, Any]] = {}
    for backend in answers["backends"]:
        for key, default, py_type, description in ADAPTER_SETTINGS.get(backend, []):
            items[key] = _item(default, py_type, description, "")
    return items


def _item(default: Any, py_type: str, description: str, constraint: str) -> dict[str, Any]:
    return {
        "default": default,
        "description": description,
        "py_type": py_type,
        "py_default": repr(default),
        "constraint": constraint,
    }


def events(answers: NodeAnswers) -> list[dict[str, str]]:
    """Events the node produces: ``<op>_completed`` per operation plus ``operation_failed``."""
    domain = answers["entity"].replace("_", "-")
    names = [f"{op}_completed" for op in answers["operations"]] + ["operation_failed"]
    result = []
    for name in names:
        suffix = f"{domain}.{name.replace('_', '-')}.v1"
        result.append({"name": name, "suffix": suffix, "example": f"{TOPIC_PREFIX}.{suffix}"})
    return result


def build_contract(answers: NodeAnswers, template_version: str) -> dict[str, Any]:
    """The contract dict for ``answers`` (validated against the shipped schema)."""
    node_type = answers["node_type"]
    specs = operation_specs(
        node_type,
        answers["operations"],
        answers["entity"],
        answers.get("operation_descriptions"),
        answers["description"],
    )
    major, minor, patch = (int(p) for p in answers.get("version", "1.0.0").split("."))
    features = answers["features"]
    config = configuration(answers)
    contract: dict[str, Any] = {
        "schema_version": "v2.0.0",
        "name": answers["name"],
        "version": {"major": major, "minor": minor, "patch": patch},
        "node_type": node_type,
        "description": answers["description"],
        "capabilities": [{"name": s["name"], "description": s["description"]} for s in specs],
        "dependencies": {
            "services": [
                {"name": b, "required": False, "description": BACKEND_DESCRIPTIONS.get(b, b)}
                for b in answers["backends"]
            ]
        },
        "configuration": {
            k: {"default": v["default"], "description": v["description"]} for k, v in config.items()
        },
        "subcontracts": {
            "event_type": {
                "consumed_events": [],
                "produced_events": [e["name"] for e in events(answers)],
            },
        },
        "performance_targets": dict(answers["performance_targets"]),
        "health_checks": {
            "components": [{"name": "node", "critical": True, "timeout_seconds": 2.0}]
            + [{"name": b, "critical": False, "timeout_seconds": 5.0} for b in answers["backends"]]
        },
        "io_operations": [
            {
                "name": s["name"],
                "description": s["description"],
                "input_model": "Model" + _stem(answers["name"], node_type) + "Request",
                "output_model": "Model" + _stem(answers["name"], node_type) + "Response",
            }
            for s in specs
        ],
        "generation": {
            "generator": "omninode-generate",
            "generator_version": __version__,
            "template_version": template_version,
            "entity": answers["entity"],
        },
        "quality_gates": {"min_quality_score": 0.8, "min_test_coverage": 80},
    }
    if node_type == "effect":
        contract["subcontracts"]["effect"] = {
            "operations": [{"name": s["name"], "description": s["description"]} for s in specs]
        }
    advanced: dict[str, Any] = {}
    if "retry" in features:
        advanced["retry_policy"] = {"max_attempts": 4, "backoff_ms": 50, "strategy": "exponential_jitter"}
    if "circuit_breaker" in features:
        advanced["circuit_breaker"] = {"failure_threshold": 5, "reset_timeout_seconds": 30}
    if advanced:
        contract["advanced_features"] = advanced
    if node_type == "reducer":
        contract["subcontracts"]["aggregation"] = {"group_by": "group", "value_field": "value"}
    if node_type == "orchestrator":
        contract["subcontracts"]["fsm"] = {
            "states": ["pending", "running", "completed", "failed", "cancelled"],
            "initial_state": "pending",
        }
    return validate_contract(contract, source=f"contract of {answers['name']}")


def _stem(name: str, node_type: str) -> str:
    return name[4 : -len(node_type)]


def contract_hash(contract: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``contract``."""
    return hashlib.sha256(json.dumps(contract, sort_keys=True).encode()).hexdigest()
