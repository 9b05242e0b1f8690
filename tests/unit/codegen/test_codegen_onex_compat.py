"""The core shapes generated nodes rely on match omnibase_core's (issue 9: port by imports only)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable
from uuid import UUID, uuid4

import pytest

from omninode_bridge.core import (
    EnumCoreErrorCode,
    EnumOnexStatus,
    ModelONEXContainer,
    ModelOnexError,
    NodeCompute,
)


def test_model_onex_error_signature_and_attributes() -> None:
    cid = uuid4()
    err = ModelOnexError(
        "boom", error_code=EnumCoreErrorCode.TIMEOUT, status=EnumOnexStatus.ERROR, correlation_id=cid, key="k"
    )
    assert (err.message, err.error_code, err.status, err.correlation_id) == (
        "boom",
        EnumCoreErrorCode.TIMEOUT,
        EnumOnexStatus.ERROR,
        cid,
    )
    assert err.context == {"key": "k"}
    assert err.to_dict()["correlation_id"] == str(cid)
    assert str(err) == "[ONEX_CORE_088_TIMEOUT] boom"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("INVALID_INPUT", EnumCoreErrorCode.INVALID_INPUT),
        ("ONEX_CORE_007_INVALID_INPUT", EnumCoreErrorCode.INVALID_INPUT),
        ("MY_APP_001_CUSTOM", "MY_APP_001_CUSTOM"),
        (None, None),
    ],
)
def test_error_code_accepts_enum_str_or_none(code: str | None, expected: object) -> None:
    err = ModelOnexError("m", error_code=code)
    assert err.error_code == expected
    assert err.status is EnumOnexStatus.ERROR and err.correlation_id is None
    assert str(err).endswith("m")


def test_positional_code_still_works_for_existing_callers() -> None:
    err = ModelOnexError("m", EnumCoreErrorCode.INVALID_STATE, lock="x")
    assert err.error_code is EnumCoreErrorCode.INVALID_STATE and err.context == {"lock": "x"}


@runtime_checkable
class Store(Protocol):
    async def get(self, key: str) -> str | None: ...


class Plain(Protocol):
    def ping(self) -> bool: ...


class RedisStore:
    async def get(self, key: str) -> str | None:
        return key


def test_container_get_service_by_protocol_and_name() -> None:
    container = ModelONEXContainer()
    store = RedisStore()
    container.register_service(Store, store)
    assert container.get_service(Store) is store
    named = RedisStore()
    container.register_service(Store, named, name="cache")
    assert container.get_service(Store, "cache") is named
    assert container.get("cache") is named


def test_container_finds_a_registered_instance_by_type_and_never_invents_one() -> None:
    only = RedisStore()
    assert ModelONEXContainer(store=only).get_service(Store) is only
    with pytest.raises(ModelOnexError) as info:
        ModelONEXContainer().get_service(Plain)
    assert info.value.error_code is EnumCoreErrorCode.SERVICE_UNAVAILABLE
    assert "Plain" in info.value.message
    with pytest.raises(ModelOnexError):
        ModelONEXContainer(a=RedisStore(), b=RedisStore()).get_service(Store)  # ambiguous


class _Node(NodeCompute):
    async def execute_compute(self, request: object) -> object:
        return request


async def test_nodes_have_a_node_id() -> None:
    node = _Node(ModelONEXContainer())
    assert isinstance(node.node_id, UUID)
    assert _Node(ModelONEXContainer()).node_id != node.node_id
    fixed = uuid4()
    assert _Node(ModelONEXContainer({"node_id": str(fixed)})).node_id == fixed
    assert (await node.health())["node_id"] == str(node.node_id)
