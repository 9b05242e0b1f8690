"""Load and validate ONEX v2.0 node contracts against the schema shipped in the package.

Every node (the hand-written lock node and generated ones) describes itself in a
``contract.yaml``; this module is the single place that decides whether such a
file is valid, and says where the problem is when it is not.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from omninode_bridge.core.errors import EnumCoreErrorCode, ModelOnexError

SCHEMA_RESOURCE = "onex_contract_v2.schema.json"


@lru_cache(maxsize=1)
def contract_schema() -> dict[str, Any]:
    """The ONEX v2.0 contract JSON Schema (loaded once)."""
    text = resources.files("omninode_bridge.core.schemas").joinpath(SCHEMA_RESOURCE).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(contract_schema())


def _location(error: ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"${path}" if path else "$"


def _describe(error: ValidationError) -> str:
    if error.validator == "pattern" and list(error.absolute_path) == ["name"]:
        return (
            f"{error.instance!r} does not match Node<Name><Effect|Compute|Reducer|Orchestrator>"
            " consistent with node_type"
        )
    if error.validator == "additionalProperties" and not error.absolute_path:
        return f"unknown top-level key(s): {error.message.split('(')[-1].rstrip(')')}"
    return error.message


def contract_problems(contract: Any) -> list[str]:
    """Every schema problem in ``contract`` as ``"<json path>: <message>"``, sorted."""
    errors = sorted(_validator().iter_errors(contract), key=lambda e: (list(map(str, e.path)), e.message))
    return sorted({f"{_location(e)}: {_describe(e)}" for e in errors})


def validate_contract(contract: Any, *, source: str = "contract") -> dict[str, Any]:
    """Return ``contract`` if it follows the ONEX v2.0 schema.

    Raises :class:`ModelOnexError` with ``CONTRACT_VALIDATION_ERROR`` naming the path
    to the first problem (all problems are in ``context["problems"]``).
    """
    problems = contract_problems(contract)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelOnexError(
            f"{source}: {problems[0]}{more}",
            EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR,
            problems=problems,
        )
    assert isinstance(contract, dict)
    return contract


def load_contract(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) contract file and validate it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ModelOnexError(
            f"cannot read contract {file}: {err.strerror or err}",
            EnumCoreErrorCode.FILE_READ_ERROR,
            path=str(file),
        ) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ModelOnexError(
            f"{file}: not valid YAML: {err}",
            EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR,
            path=str(file),
        ) from err
    return validate_contract(data, source=str(file))


def contract_operations(contract: dict[str, Any]) -> list[str]:
    """Operation names a contract declares (``subcontracts.effect.operations``,
    then ``io_operations``), in declaration order without duplicates."""
    names: list[str] = []
    effect = (contract.get("subcontracts") or {}).get("effect") or {}
    for source in (effect.get("operations") or [], contract.get("io_operations") or []):
        for op in source:
            name = op.get("name") if isinstance(op, dict) else op
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names
