"""Unit tests of stage 1 (prompt parsing) and operation kinds."""

from __future__ import annotations

import pytest

from omninode_bridge.codegen.operations import kind_of, operation_specs
from omninode_bridge.codegen.prompt import check_name, classify, parse_prompt, singular
from omninode_bridge.codegen.prompt_text import words
from omninode_bridge.codegen.render import node_paths
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


FLAGSHIP = (
    "Create NodeDistributedLockEffect for PostgreSQL-backed distributed locking with "
    "acquire/release/extend lock operations, automatic lease expiration, background cleanup task, "
    "connection pooling integration, metrics and health monitoring"
)


@pytest.mark.parametrize("node_type", [None, "effect"])
def test_name_written_in_the_description_is_the_name(node_type: str | None) -> None:
    parsed = parse_prompt(FLAGSHIP, node_type=node_type)
    assert parsed.name == "NodeDistributedLockEffect"
    assert (parsed.node_type, parsed.confidence) == ("effect", 1.0)
    assert node_paths(parsed.to_dict()) == ("distributed_lock_effect", "v1_0_0")
    assert parsed.entity == "lock"
    assert parsed.domain == "postgres"
    assert parsed.operations == ["acquire_lock", "release_lock", "extend_lock", "cleanup_expired"]
    assert parsed.backends == ["postgres"]
    assert parsed.features == ["ttl", "cleanup", "pooling", "metrics", "health"]
    leaked = [v for v in (parsed.entity, parsed.domain, *parsed.operations) if "node" in v or "effect" in v]
    assert not leaked
    assert parsed == parse_prompt(FLAGSHIP, node_type=node_type)


def test_name_in_the_description_sets_the_type_unless_overridden() -> None:
    parsed = parse_prompt("Build a NodeOrderTotalsReducer over order events")
    assert (parsed.name, parsed.node_type, parsed.confidence) == ("NodeOrderTotalsReducer", "reducer", 1.0)
    overridden = parse_prompt("Build a NodeOrderTotalsReducer over order events", node_type="effect")
    assert (overridden.name, overridden.node_type) == ("NodeOrderTotalsEffect", "effect")
    assert overridden.confidence < 1.0
    assert any("becomes NodeOrderTotalsEffect" in note for note in overridden.notes)
    explicit = parse_prompt(FLAGSHIP, name="NodeLeaseEffect")
    assert explicit.name == "NodeLeaseEffect"
    assert explicit.entity == "lock"
    assert any("NodeDistributedLockEffect" in note for note in explicit.notes)


@pytest.mark.parametrize(
    ("text", "operations"),
    [
        (
            "Cache service: get, set and delete cache entries in Redis",
            ["get_cache_entry", "set_cache_entry", "delete_cache_entry"],
        ),
        ("Bridge to Kafka that can publish/consume order events", ["publish_order", "consume_order"]),
        (
            "Lease manager: acquire, renew or release leases on jobs stored in PostgreSQL",
            ["acquire_lease", "renew_lease", "release_lease"],
        ),
    ],
)
def test_listed_verbs_become_one_operation_each_on_their_noun(text: str, operations: list[str]) -> None:
    assert parse_prompt(text).operations == operations


def test_hyphenated_compounds_still_name_backends_and_features() -> None:
    parsed = parse_prompt("Redis-backed session store with connection pooling")
    assert parsed.backends == ["redis"]
    assert parsed.features == ["pooling"]
    assert parsed.entity == "session"


def test_background_cleanup_adds_a_cleanup_operation_for_effects_only() -> None:
    effect = parse_prompt("Store sessions in Redis with a background cleanup task")
    assert effect.operations[-1] == "cleanup_expired"
    assert {"ttl", "cleanup"} <= set(effect.features)
    reducer = parse_prompt("Aggregate order totals with a background cleanup task")
    assert "cleanup_expired" not in reducer.operations
    cache = parse_prompt("Cache session tokens in Redis with TTL expiry and cleanup")
    assert "cleanup_expired" not in cache.operations  # no background task asked for


def test_lock_family_kinds() -> None:
    lock_ops = ("acquire_lock", "release_lock", "extend_lock", "renew_lease")
    assert [kind_of("effect", op) for op in lock_ops] == ["acquire", "release", "extend", "extend"]
    assert kind_of("effect", "cleanup_expired") == "cleanup"
    assert kind_of("effect", "extend_session") == "update"  # no lock noun: a plain update


def test_examples_after_such_as_are_not_the_entity() -> None:
    """The object after "of"/"for" names the node, not the examples listed after "such as"."""
    parsed = parse_prompt("Calculate statistics such as mean, min and max of sensor readings")
    assert (parsed.name, parsed.entity, parsed.node_type) == (
        "NodeSensorReadingCompute",
        "sensor_reading",
        "compute",
    )
    assert parsed.operations == ["calculate_sensor_reading"]
    examples_only = parse_prompt("Cache objects such as users and orders in Redis")
    assert examples_only.name == "NodeObjectEffect"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Create and store orders in PostgreSQL", ["create_order"]),
        ("Publish and send notifications over HTTP", ["publish_notification"]),
        (
            "Store user profiles in PostgreSQL with CRUD operations",
            [
                "create_user_profile",
                "get_user_profile",
                "update_user_profile",
                "delete_user_profile",
                "list_user_profiles",
            ],
        ),
        ("Upload invoices to S3 and download them", ["upload_invoice", "download_invoice"]),
    ],
)
def test_synonym_operations_are_deduplicated(text: str, expected: list[str]) -> None:
    """Operations with the same kind on the same noun mean the same thing: keep the first."""
    parsed = parse_prompt(text)
    assert parsed.operations == expected
    kinds = [
        (kind_of(parsed.node_type, op), op.split("_", 1)[1].removesuffix("s")) for op in parsed.operations
    ]
    assert len(kinds) == len(set(kinds))
