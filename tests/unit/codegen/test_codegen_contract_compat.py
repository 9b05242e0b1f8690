"""Lenient reading of real-world ONEX contract variants (project fixtures in contracts/)."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import yaml

from omninode_bridge.codegen.contract_compat import normalize_contract, read_contract
from omninode_bridge.core import ModelOnexError
from omninode_bridge.core.contract import contract_problems

FIXTURES = Path(__file__).parent / "contracts"
ALL = sorted(FIXTURES.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_every_variant_reads_to_a_strict_contract(path: Path) -> None:
    normalized = read_contract(path)
    assert contract_problems(normalized.contract) == []
    assert normalized.contract["schema_version"] == "v2.0.0"
    assert normalized.contract["node_type"] in ("effect", "compute", "reducer", "orchestrator")
    assert normalized.warnings
    assert len(normalized.warnings) == len(set(normalized.warnings)), "one warning per legacy form"


def test_snake_case_generic_upper_case_and_plain_string_operations() -> None:
    n = read_contract(FIXTURES / "llm_effect.yaml")
    assert (n.contract["name"], n.contract["node_type"]) == ("NodeLlmEffect", "effect")
    assert list(n.operations) == ["generate_completion", "get_cached_completion"]
    assert n.contract["subcontracts"]["effect"]["operations"][0] == {
        "name": "generate_completion",
        "description": "",
    }
    assert n.backends == ["redis", "http", "kafka"]
    assert n.contract["health_checks"]["components"][1] == {"name": "redis", "critical": False}
    text = "\n".join(n.warnings)
    for fragment in (
        "node_type 'EFFECT_GENERIC' read as 'effect'",
        "name 'llm_effect' read as 'NodeLlmEffect'",
        "2 operation(s) given as plain strings",
        "lifecycle methods health_check",
        "health_checks given as a list",
        "dependencies given as a list",
        "quality_gates has an unexpected shape",
        "legacy key 'kafka' dropped",
        "legacy key 'event_bus' dropped",
        "legacy key 'security' dropped",
        "legacy key 'monitoring' dropped",
        "legacy key 'deployment' dropped",
        "legacy key 'node_name' dropped",
        "legacy key 'handler_id' dropped",
        "legacy key 'descriptor' dropped",
    ):
        assert fragment in text


def test_dotted_operations_keep_their_descriptions() -> None:
    n = read_contract(FIXTURES / "scoring_compute.yaml")
    assert n.operations == {
        "risk_score": "Score a payment between 0 and 1",
        "risk_explain": "Explain the top factors of a score",
    }
    assert n.contract["version"] == {"major": 1, "minor": 2, "patch": 3}
    assert n.contract["description"].startswith("Scores payment risk")


def test_error_handling_and_performance_requirements_keep_their_meaning() -> None:
    n = read_contract(FIXTURES / "import_orchestrator.yaml")
    assert n.contract["advanced_features"] == {"retry_policy": {"max_attempts": 5, "initial_delay_ms": 200}}
    assert n.contract["performance_targets"] == {"latency_ms_p95": 1500.0, "throughput_rps": 2.0}
    assert n.operations["get_import_status"] == "Report the state of an import run"
    assert "io_operations[0] has no name (operation_type 'http_read'): dropped" in n.warnings
    assert n.steps == ["download", "validate", "write"]
    assert "workflow_steps read as the described steps of steps.py: download, validate, write" in n.warnings


def test_top_level_fsm_moves_under_subcontracts() -> None:
    n = read_contract(FIXTURES / "totals_reducer.yaml")
    assert set(n.contract["subcontracts"]) == {"fsm", "aggregation", "state_management", "routing"}
    assert n.backends == ["postgres"] and n.features == ["metrics"]
    assert n.contract["version"] == {"major": 1, "minor": 4, "patch": 2}


def test_a_strict_contract_reads_back_unchanged() -> None:
    strict = normalize_contract(yaml.safe_load((FIXTURES / "llm_effect.yaml").read_text())).contract
    again = normalize_contract(copy.deepcopy(strict))
    assert again.contract == strict
    assert again.warnings == []


@pytest.mark.parametrize("bad", [None, [], "text", 3, {"node_type": "widget", "name": "x"}, {"name": "x"}])
def test_unreadable_contracts_are_one_clear_error(bad: object) -> None:
    with pytest.raises(ModelOnexError):
        normalize_contract(bad)


def test_never_crashes_on_mangled_values() -> None:
    """Every top-level value of every fixture replaced by odd values: a contract or ModelOnexError."""
    odd = [None, 0, "x", [], {}, [None], {"a": None}, ["a", 1]]
    for path in ALL:
        raw = yaml.safe_load(path.read_text())
        for key, value in itertools.product(list(raw), odd):
            mangled = {**raw, key: value}
            try:
                result = normalize_contract(mangled)
            except ModelOnexError:
                continue
            assert contract_problems(result.contract) == [], (path.name, key, value)
