"""NodeDistributedLockEffect against a real PostgreSQL: the original node's test list
(initialize, acquire success/held, release, release not held, extend, extend expired,
query, query not found, cleanup, acquire with retry, deadlock detection, metrics) and ours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omninode_bridge.codegen.manifests import manifest_problems
from omninode_bridge.core import ModelONEXContainer, ModelOnexError
from omninode_bridge.core.contract import load_contract
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models import (
    EnumLockOperation,
    EnumLockStatus,
    ModelDistributedLockConfig,
    ModelDistributedLockRequest,
)
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.node import NodeDistributedLockEffect, main

pytestmark = pytest.mark.integration
NODE_DIR = Path(__file__).resolve().parents[3] / "src/omninode_bridge/nodes/distributed_lock_effect/v1_0_0"


@pytest.fixture
async def node(dsn: str) -> AsyncIterator[NodeDistributedLockEffect]:
    n = NodeDistributedLockEffect(
        ModelONEXContainer(
            {"dsn": dsn, "max_connections": 5, "acquire_retry_delay": 0.05, "cleanup_interval": 3600}
        )
    )
    await n.initialize()
    yield n
    await n.cleanup()


async def run(node: NodeDistributedLockEffect, **req: Any) -> Any:
    return await node.process(req)


async def test_initialize_health_and_cleanup(dsn: str) -> None:
    n = NodeDistributedLockEffect(ModelONEXContainer({"dsn": dsn}))
    with pytest.raises(ModelOnexError, match="not initialized"):
        await n.process({"operation": "query", "lock_name": "x"})
    await n.initialize()
    health = await n.health()
    assert health["status"] == "healthy" and health["postgres"] == "connected" and health["locks"] == 0
    await n.cleanup()
    await n.cleanup()  # twice is fine
    assert n.locks is None


async def test_initialize_fails_cleanly_without_a_database() -> None:
    n = NodeDistributedLockEffect(ModelONEXContainer({"postgres_host": "127.0.0.1", "postgres_port": 1}))
    with pytest.raises(ModelOnexError) as err:
        await n.initialize()
    assert err.value.error_code.name == "INITIALIZATION_FAILED"


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ModelOnexError, match="max_connections"):
        NodeDistributedLockEffect(ModelONEXContainer({"max_connections": 0}))


async def test_acquire_success(node: NodeDistributedLockEffect) -> None:
    res = await run(
        node,
        operation="acquire_lock",
        lock_name="a",
        owner_id="w1",
        lease_duration=30,
        owner_metadata={"host": "h1"},
        correlation_id="corr-1",
        execution_id="ex-1",
    )
    assert res.success and res.lock_acquired and res.error_code is None
    assert (
        res.operation is EnumLockOperation.ACQUIRE_LOCK
        and res.operation_type is EnumLockOperation.ACQUIRE_LOCK
    )
    assert res.correlation_id == "corr-1" and res.execution_id == "ex-1"
    assert res.lease_id and res.token == 1 and res.acquire_attempts == 1
    assert res.lock_info.status is EnumLockStatus.ACQUIRED and res.lock_info.owner_id == "w1"
    assert res.lock_info.metadata == {"owner_metadata": {"host": "h1"}}
    assert res.performance_metrics.execution_time_ms > 0 and res.duration_ms > 0


async def test_acquire_held_by_other(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire", lock_name="a", owner_id="w1")
    res = await run(node, operation="acquire", lock_name="a", owner_id="w2", max_acquire_attempts=1)
    assert not res.success and res.error_code == "LOCK_HELD_BY_OTHER"
    assert res.retry_after_seconds is not None and 0 < res.retry_after_seconds <= 30
    assert res.operation is EnumLockOperation.ACQUIRE and res.operation_type is EnumLockOperation.ACQUIRE_LOCK


async def test_release_by_owner_and_by_lease_id(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="a", owner_id="w1")
    res = await run(node, operation="release_lock", lock_name="a", owner_id="w1")
    assert res.success and res.lock_released and res.lock_info.status is EnumLockStatus.RELEASED
    got = await run(node, operation="acquire_lock", lock_name="a", owner_id="w2")
    res = await run(node, operation="release", lock_name="a", lease_id=got.lease_id)
    assert res.success
    again = await run(node, operation="release", lock_name="a", lease_id=got.lease_id)
    assert again.success and again.warnings == ["the lease was already released"]


async def test_release_not_held(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="a", owner_id="w1")
    res = await run(node, operation="release_lock", lock_name="a", owner_id="someone-else")
    assert not res.success and res.error_code == "LOCK_NOT_HELD"
    info = await run(node, operation="query", lock_name="a")
    assert info.lock_info.owner_id == "w1"  # nothing released


async def test_extend(node: NodeDistributedLockEffect) -> None:
    first = await run(node, operation="acquire_lock", lock_name="a", owner_id="w1", lease_duration=5)
    res = await run(node, operation="extend_lock", lock_name="a", owner_id="w1", extension_duration=120)
    assert res.success and res.lock_extended and res.lock_info.lease_duration == 120
    assert res.lock_info.expires_at > first.lock_info.expires_at and res.token == first.token


async def test_extend_expired(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="a", owner_id="w1", lease_duration=1)
    await asyncio.sleep(1.3)
    res = await run(node, operation="extend", lock_name="a", owner_id="w1", extension_duration=30)
    assert not res.success and res.error_code == "LOCK_EXPIRED"


async def test_query_and_query_not_found(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="q", owner_id="w1", mode="shared")
    await run(node, operation="acquire_lock", lock_name="q", owner_id="w2", mode="shared")
    res = await run(node, operation="get_lock_info", lock_name="q", owner_id="w2")
    assert res.success and res.lock_info.status is EnumLockStatus.ACQUIRED
    assert res.lock_info.owner_id == "w2" and {h["owner_id"] for h in res.lock_info.holders} == {"w1", "w2"}
    assert all("lease_id" not in h for h in res.lock_info.holders)
    missing = await run(node, operation="query", lock_name="never")
    assert not missing.success and missing.error_code == "LOCK_NOT_FOUND"


async def test_cleanup_expired(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="c1", owner_id="w1", lease_duration=1)
    await run(node, operation="acquire_lock", lock_name="c2", owner_id="w1", lease_duration=1)
    await run(node, operation="acquire_lock", lock_name="c3", owner_id="w1", lease_duration=60)
    await asyncio.sleep(1.3)
    res = await run(node, operation="cleanup", max_age_seconds=0)
    assert res.success and res.cleaned_count == 2 and res.cleaned_lock_names == ["c1", "c2"]
    assert res.warnings  # max_age_seconds is explained, not silently ignored
    assert (await run(node, operation="cleanup_expired")).cleaned_count == 0


async def test_acquire_with_retry(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="r", owner_id="w1", lease_duration=1)
    res = await run(
        node,
        operation="acquire_lock",
        lock_name="r",
        owner_id="w2",
        max_acquire_attempts=10,
        acquire_retry_delay=0.3,
    )
    assert res.success and res.acquire_attempts > 1
    assert res.performance_metrics.retry_count >= res.acquire_attempts - 1
    failed = await run(
        node,
        operation="acquire_lock",
        lock_name="r",
        owner_id="w3",
        max_acquire_attempts=2,
        acquire_retry_delay=0.01,
    )
    assert not failed.success and failed.acquire_attempts == 2 and failed.error_code == "LOCK_HELD_BY_OTHER"


async def test_long_poll_wait(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="lp", owner_id="w1")
    waiting = asyncio.ensure_future(
        run(node, operation="acquire_lock", lock_name="lp", owner_id="w2", wait=10)
    )
    await asyncio.sleep(0.3)
    await run(node, operation="release_lock", lock_name="lp", owner_id="w1")
    res = await asyncio.wait_for(waiting, 10)
    assert res.success and res.lock_info.owner_id == "w2"


async def test_deadlock_detection(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="x", owner_id="A")
    await run(node, operation="acquire_lock", lock_name="y", owner_id="B")
    a_waits = asyncio.ensure_future(run(node, operation="acquire_lock", lock_name="y", owner_id="A", wait=10))
    await asyncio.sleep(0.3)
    res = await run(node, operation="acquire_lock", lock_name="x", owner_id="B", wait=10)
    assert not res.success and res.error_code == "DEADLOCK_DETECTED"
    await run(node, operation="release_lock", lock_name="y", owner_id="B")
    assert (await asyncio.wait_for(a_waits, 10)).success


async def test_list_and_force_release(node: NodeDistributedLockEffect) -> None:
    for i in range(3):
        await run(node, operation="acquire_lock", lock_name=f"ns:{i}", owner_id=f"o{i}")
    listed = await run(node, operation="list_locks", prefix="ns:")
    assert [r["lock_name"] for r in listed.locks] == ["ns:0", "ns:1", "ns:2"]
    freed = await run(node, operation="force_release", lock_name="ns:1", reason="test")
    assert freed.success and freed.cleaned_count == 1
    after = await run(node, operation="release_lock", lock_name="ns:1", owner_id="o1")
    assert not after.success and after.error_code == "LOCK_NOT_HELD"


async def test_invalid_requests_are_error_responses(node: NodeDistributedLockEffect) -> None:
    res = await run(node, operation="acquire_lock", owner_id="w", correlation_id="c9")
    assert not res.success and res.error_code == "VALIDATION_ERROR" and res.correlation_id == "c9"
    bad = await run(node, operation="acquire_lock", lock_name="a", lease_duration=7200)
    assert bad.error_code == "VALIDATION_ERROR" and "lease_duration" in (bad.error_message or "")
    unknown = await run(node, operation="teleport", lock_name="a")
    assert unknown.error_code == "VALIDATION_ERROR"
    engine = await run(node, operation="acquire_lock", lock_name="n" * 200, owner_id="w", lease_id="zzz")
    assert engine.error_code == "VALIDATION_ERROR"


async def test_original_field_names_and_process_alias(node: NodeDistributedLockEffect) -> None:
    req = ModelDistributedLockRequest.model_validate(
        {"operation_type": "acquire_lock", "lock_name": "o", "owner_id": "w", "lease_duration_seconds": 12}
    )
    res = await node.execute_effect(req)
    assert res.success and res.lock_info.lease_duration == 12
    warned = await run(node, operation="acquire_lock", lock_name="o2", owner_id="w", token=99)
    assert warned.success and warned.warnings


async def test_metrics(node: NodeDistributedLockEffect) -> None:
    await run(node, operation="acquire_lock", lock_name="m", owner_id="w1")
    await run(node, operation="acquire_lock", lock_name="m", owner_id="w2", max_acquire_attempts=1)
    await run(node, operation="release_lock", lock_name="m", owner_id="w1")
    m = await node.metrics()
    assert m["calls"] == 3 and m["operations"] == {"acquire_lock": 2, "release_lock": 1}
    assert m["errors"] == {"LOCK_HELD_BY_OTHER": 1}
    assert m["engine"]["acquires"]["granted"] == 1 and m["engine"]["releases"] == 1
    assert m["engine"]["pool_size"] >= 1


async def test_shared_client_from_container(dsn: str, settings: LockSettings) -> None:
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as client:
        n = NodeDistributedLockEffect(ModelONEXContainer(lock_client=client))
        await n.initialize()
        assert (await run(n, operation="acquire_lock", lock_name="s", owner_id="w")).success
        await n.cleanup()
        assert (await client.get_lock_info("s")).held  # the node did not close the caller's client


async def test_health_reports_an_unreachable_database(dsn: str) -> None:
    from proxy import CuttableProxy

    proxy = await CuttableProxy(dsn).start()
    n = NodeDistributedLockEffect(ModelONEXContainer({"dsn": proxy.dsn, "min_connections": 1}))
    await n.initialize()
    try:
        proxy.cut()
        health = await n.health()
        assert health["status"] == "unhealthy" and health["postgres"] == "unreachable"
    finally:
        await n.cleanup()
        await proxy.close()


def test_config_keys_of_the_original_node() -> None:
    cfg = ModelDistributedLockConfig.model_validate(
        {
            "postgres_host": "db",
            "postgres_port": 5433,
            "postgres_database": "locks",
            "postgres_user": "u",
            "postgres_password": "p@ss",
            "min_connections": 1,
            "max_connections": 4,
            "default_lease_duration": 45,
            "cleanup_interval": 60,
            "max_acquire_attempts": 3,
            "other": 1,
        }
    )
    assert cfg.database_dsn() == "postgresql://u:p%40ss@db:5433/locks"
    s = cfg.settings()
    assert (s.pool_min, s.pool_max, s.default_ttl, s.cleanup_interval) == (1, 4, 45, 60)
    assert "p@ss" not in repr(cfg)


def test_contract_and_manifests_pass_their_validators() -> None:
    contract = load_contract(NODE_DIR / "contract.yaml")
    assert contract["name"] == "NodeDistributedLockEffect"
    problems, skipped = manifest_problems(NODE_DIR)
    assert problems == [] and skipped == [], (problems, skipped)
    deployment = (NODE_DIR / "deployment_manifest.yaml").read_text()
    assert "replicas: 3" in deployment and "runAsNonRoot: true" in deployment
    assert "kind: Service" in deployment and "readinessProbe" in deployment and "livenessProbe" in deployment
    docker = (NODE_DIR / "Dockerfile").read_text()
    assert docker.count("FROM ") == 2 and "USER 10001" in docker


def test_module_main_refuses_public_bind_without_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMNINODE_CLIENT_TOKENS", "OMNINODE_ADMIN_TOKENS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--host", "0.0.0.0", "--port", "1"])
    assert exit_.value.code == 2


async def test_correlation_id_is_echoed_and_reaches_the_events(
    node: NodeDistributedLockEffect, admin_conn: Any
) -> None:
    got = await run(node, operation="acquire_lock", lock_name="n:corr", owner_id="o", correlation_id="node-1")
    assert got.success and got.correlation_id == "node-1"
    rel = await run(node, operation="release_lock", lock_name="n:corr", owner_id="o", correlation_id="node-2")
    assert rel.success and rel.correlation_id == "node-2"
    rows = await admin_conn.fetch(
        "SELECT event_type, correlation_id FROM omninode_locks.events WHERE lock_name = 'n:corr' ORDER BY id"
    )
    assert [(r["event_type"], r["correlation_id"]) for r in rows] == [
        ("lock_acquired", "node-1"),
        ("lock_released", "node-2"),
    ]
