"""The ONEX-compatible core: error codes, container, node life cycle, layering."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from omninode_bridge.core import (
    EnumCoreErrorCode,
    ModelONEXContainer,
    ModelOnexError,
    NodeEffect,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "omninode_bridge"


def test_error_codes_follow_omnibase_core() -> None:
    assert EnumCoreErrorCode.INITIALIZATION_FAILED.value == "ONEX_CORE_087_INITIALIZATION_FAILED"
    assert EnumCoreErrorCode.VALIDATION_ERROR.value == "ONEX_CORE_006_VALIDATION_ERROR"
    assert EnumCoreErrorCode.INITIALIZATION_FAILED.get_number() == 87
    for member in EnumCoreErrorCode:
        assert re.fullmatch(rf"ONEX_CORE_\d{{3}}_{member.name}", member.value), member


def _referenced_members(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".j2":  # templates: the rendered code references these names
        return set(re.findall(r"EnumCoreErrorCode\.([A-Z][A-Z0-9_]*)", text))
    return {
        node.attr
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "EnumCoreErrorCode"
        and not node.attr.startswith("_")
    }


def test_every_referenced_error_code_member_exists() -> None:
    """The original node referenced a member that did not exist; every test errored."""
    referenced: dict[str, str] = {}
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.j2"), *(ROOT / "tests").rglob("*.py")]
    for path in files:
        for name in _referenced_members(path):
            referenced.setdefault(name, str(path.relative_to(ROOT)))
    assert len(referenced) >= 5, "the scan found too little to be meaningful"
    missing = {n: p for n, p in referenced.items() if n not in EnumCoreErrorCode.__members__}
    assert missing == {}


class EchoNode(NodeEffect):
    async def execute_effect(self, request: Any) -> Any:
        if request == "boom":
            raise RuntimeError("kaput")
        return {"echo": request}


async def test_node_life_cycle_and_error_mapping() -> None:
    node = EchoNode(ModelONEXContainer({"x": 1}))
    with pytest.raises(ModelOnexError) as info:
        await node.process("early")
    assert info.value.error_code is EnumCoreErrorCode.INVALID_STATE
    async with node:
        assert await node.process("hi") == {"echo": "hi"}
        with pytest.raises(ModelOnexError) as info:
            await node.process("boom")
        assert info.value.error_code is EnumCoreErrorCode.NODE_EXECUTION_ERROR
        assert isinstance(info.value.__cause__, RuntimeError)
        assert (await node.health())["status"] == "healthy"
        assert (await node.metrics())["calls"] == 2
    assert (await node.health())["status"] == "not_initialized"
    with pytest.raises(ModelOnexError):
        EchoNode("not a container")  # type: ignore[arg-type]


def test_container_services() -> None:
    c = ModelONEXContainer({"ttl": 5}, pool="p")
    assert c.get("pool") == "p" and c.get_config("ttl") == 5 and c.get_config("nope", 1) == 1
    with pytest.raises(ModelOnexError) as info:
        c.get("missing")
    assert info.value.error_code is EnumCoreErrorCode.RESOURCE_NOT_FOUND
    with pytest.raises(ModelOnexError):
        c.get("pool", int)


LAYERS = {"core": set(), "locks": {"core"}, "events": {"core", "locks"}, "codegen": {"core"}}


def test_dependencies_point_one_way() -> None:
    """core <- locks <- events <- service/nodes; codegen depends on core only."""
    for layer, allowed in LAYERS.items():
        for path in (SRC / layer).rglob("*.py") if (SRC / layer).exists() else []:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.module.startswith("omninode_bridge.")
                ):
                    target = node.module.split(".")[1]
                    assert target == layer or target in allowed, (
                        f"{path.relative_to(ROOT)} imports {node.module}"
                    )
