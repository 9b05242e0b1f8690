"""Unit tests of the ONEX v2.0 contract schema and validator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from omninode_bridge.codegen.contract_builder import build_contract
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError
from omninode_bridge.core.contract import (
    contract_operations,
    contract_problems,
    load_contract,
    validate_contract,
)

VALID: dict[str, Any] = {
    "schema_version": "v2.0.0",
    "name": "NodeDistributedLockEffect",
    "version": {"major": 1, "minor": 0, "patch": 0},
    "node_type": "effect",
    "description": "Distributed locks on PostgreSQL.",
    "subcontracts": {"effect": {"operations": [{"name": "acquire_lock"}, {"name": "release_lock"}]}},
    "io_operations": [{"name": "release_lock"}, {"name": "list_locks"}],
    "performance_targets": {"acquire_p95_ms": 10},
    "health_checks": {"components": [{"name": "postgres", "critical": True, "timeout_seconds": 2}]},
}


def mutate(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def test_valid_contract_passes() -> None:
    assert validate_contract(copy.deepcopy(VALID)) == VALID
    assert contract_operations(VALID) == ["acquire_lock", "release_lock", "list_locks"]


@pytest.mark.parametrize(
    ("contract", "fragment"),
    [
        (mutate(extra_key=1), "$: unknown top-level key(s): 'extra_key'"),
        (mutate(name="NodeLockCompute"), "$.name:"),
        (mutate(name="LockEffect"), "$.name:"),
        (mutate(description="short"), "$.description:"),
        (mutate(description=None), "'description' is a required property"),
        (mutate(version={"major": 1, "minor": 0}), "'patch' is a required property"),
        (mutate(version={"major": "1", "minor": 0, "patch": 0}), "$.version.major:"),
        (mutate(node_type="sideways"), "$.node_type:"),
        (mutate(io_operations=[{"name": "Bad Name"}]), "$.io_operations[0].name:"),
    ],
)
def test_invalid_contracts_name_the_path(contract: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ModelOnexError) as info:
        validate_contract(contract)
    assert info.value.error_code is EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR
    assert any(fragment in p for p in info.value.context["problems"]), info.value.context["problems"]


def test_problems_are_sorted_and_complete() -> None:
    problems = contract_problems(mutate(extra=1, description="x"))
    assert len(problems) == 2


def test_load_contract_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelOnexError) as info:
        load_contract(tmp_path / "missing.yaml")
    assert info.value.error_code is EnumCoreErrorCode.FILE_READ_ERROR
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed", encoding="utf-8")
    with pytest.raises(ModelOnexError) as info:
        load_contract(bad)
    assert info.value.error_code is EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR


@pytest.mark.parametrize("node_type", ["effect", "compute", "reducer", "orchestrator"])
def test_built_contracts_validate(node_type: str) -> None:
    answers = {
        "description": "A node built for the schema test.",
        "name": f"NodeSample{node_type.capitalize()}",
        "node_type": node_type,
        "entity": "sample",
        "operations": ["run_sample", "get_sample"],
        "backends": ["postgres"],
        "features": ["retry", "circuit_breaker", "ttl"],
        "performance_targets": {"latency_ms_p95": 5.0, "throughput_rps": 10.0},
    }
    contract = build_contract(answers, "1.0.0")
    assert contract["name"] == answers["name"]
    assert contract_operations(contract) == ["run_sample", "get_sample"]


def test_lock_contract_configures_leases_pooling_and_records_the_entity() -> None:
    answers = {
        "description": "Distributed locks on PostgreSQL with connection pooling.",
        "name": "NodeDistributedLockEffect",
        "node_type": "effect",
        "entity": "lock",
        "operations": ["acquire_lock", "release_lock", "extend_lock", "cleanup_expired"],
        "backends": ["postgres"],
        "features": ["ttl", "cleanup", "pooling", "metrics", "health"],
        "performance_targets": {"latency_ms_p95": 50.0, "throughput_rps": 1000.0},
    }
    contract = build_contract(answers, "1.0.0")
    config = contract["configuration"]
    assert config["lock_ttl_seconds"]["default"] == 30.0
    assert config["pool_max_size"]["default"] == 10
    assert contract["generation"]["entity"] == "lock"
    assert contract_operations(contract) == answers["operations"]
    plain = build_contract({**answers, "operations": ["get_lock"], "features": []}, "1.0.0")
    assert "lock_ttl_seconds" not in plain["configuration"]
    assert "pool_max_size" not in plain["configuration"]
