"""Unit tests of stage 1 (prompt parsing) and operation kinds."""

from __future__ import annotations

import pytest

from omninode_bridge.codegen.operations import kind_of, operation_specs
from omninode_bridge.codegen.prompt import check_name, classify, parse_prompt, singular, words
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError


def test_parse_is_deterministic_and_complete() -> None:
    text = "Store user profiles in PostgreSQL with CRUD operations, TTL, retries and metrics under 20 ms at 2k rps"
    first = parse_prompt(text)
    assert first == parse_prompt(text)
    assert first.name == "NodeUserProfileEffect"
    assert first.node_type == "effect"
    assert first.confidence == 1.0
    assert first.backends == ["postgres"]
    assert first.features == ["ttl", "retry", "metrics"]
    assert first.performance_targets == {"latency_ms_p95": 20.0, "throughput_rps": 2000.0}
    assert first.operations[:5] == [
        "create_user_profile",
        "get_user_profile",
        "update_user_profile",
        "delete_user_profile",
        "list_user_profiles",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cache session tokens in Redis", "effect"),
        ("Compute a pure hash of payloads", "compute"),
        ("Aggregate totals per group", "reducer"),
        ("Orchestrate the approval workflow steps", "orchestrator"),
    ],
)
def test_classify(text: str, expected: str) -> None:
    node_type, confidence, scores = classify(words(text))
    assert node_type == expected
    assert 0 < confidence <= 1
    assert scores[expected] > 0


def test_explicit_type_and_name_win() -> None:
    parsed = parse_prompt("Cache session tokens in Redis", node_type="compute")
    assert parsed.node_type == "compute"
    assert parsed.name.endswith("Compute")
    assert parsed.notes
    named = parse_prompt("Cache session tokens in Redis", name="NodeTokenCacheEffect")
    assert (named.name, named.entity, named.node_type) == ("NodeTokenCacheEffect", "token_cache", "effect")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"description": ""}, "too short"),
        ({"description": "zzzz qqqq xxxx"}, "not meaningful"),
        ({"description": "Cache session tokens", "name": "node_bad"}, "invalid --name"),
        (
            {"description": "Cache session tokens", "name": "NodeXEffect", "node_type": "reducer"},
            "contradicts",
        ),
        ({"description": "Cache session tokens", "node_type": "weird"}, "--node-type"),
    ],
)
def test_bad_input(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(ModelOnexError) as info:
        parse_prompt(**kwargs)
    assert info.value.error_code is EnumCoreErrorCode.INVALID_INPUT
    assert fragment in info.value.message


def test_check_name_returns_suffix_type() -> None:
    assert check_name("NodeLedgerReducer", None) == "reducer"


def test_singular() -> None:
    assert [singular(w) for w in ("profiles", "entries", "boxes", "status", "news")] == [
        "profile",
        "entry",
        "box",
        "status",
        "new",
    ]


def test_operation_kinds() -> None:
    assert kind_of("effect", "get_user") == "read"
    assert kind_of("effect", "frobnicate_user") == "send"
    assert kind_of("compute", "hash_document") == "hash"
    assert kind_of("reducer", "get_order_state") == "state"
    assert kind_of("orchestrator", "get_flow_status") == "status"
    spec = operation_specs("effect", ["put_item"], "item")[0]
    assert spec["member"] == "PUT_ITEM" and spec["handler"] == "_handle_put_item" and spec["kind"] == "write"
