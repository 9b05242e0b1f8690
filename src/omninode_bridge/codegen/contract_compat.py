"""Read real OmniNode contracts: lenient in, strict out.

Contracts in the wild differ from the strict ONEX v2.0 layout this package writes:
``node_type: COMPUTE_GENERIC`` or ``EFFECT``, snake_case names (``llm_effect``),
operations as plain strings or only in ``input_state``, ``contract_version`` instead
of ``schema_version``, ``subcontracts``/``health_checks``/``dependencies`` as lists,
and keys such as ``error_handling``, ``tool_specification`` or ``handler_routing``.
:func:`normalize_contract` maps each to the strict form (what it means is kept:
operation names and descriptions, retry and circuit-breaker policies, performance
targets, backends) and says what it did, one warning per legacy form. It never
raises anything but :class:`ModelOnexError`, and its result passes the schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omninode_bridge.codegen import contract_sections as sections
from omninode_bridge.codegen.prompt import NODE_TYPES
from omninode_bridge.core.contract import contract_problems
from omninode_bridge.core.errors import EnumCoreErrorCode, ModelOnexError

SCHEMA_VERSION = "v2.0.0"
# Legacy keys with no strict equivalent: read for meaning where there is one, then dropped.
DROPPED = (
    "base_class",
    "input_model",
    "output_model",
    "tool_specification",
    "metadata",
    "node_name",
    "node_version",
    "contract_name",
    "contract_version",
    "author",
    "created_at",
    "testing",
    "security",
    "monitoring",
    "deployment",
    "descriptor",
    "handler_id",
    "handler_routing",
    "streaming",
    "kafka",
    "event_bus",
    "workflow_steps",
    "operations",
    "error_handling",
    "performance_requirements",
    "aggregation_strategy",
    "execution_capabilities",
    "persistence",
    "fsm_tracking",
    "validation",
    "metrics",
)
STRICT_KEYS = frozenset(
    {
        "schema_version",
        "name",
        "version",
        "node_type",
        "description",
        "capabilities",
        "endpoints",
        "dependencies",
        "configuration",
        "mixins",
        "advanced_features",
        "subcontracts",
        "performance_targets",
        "health_checks",
        "input_state",
        "output_state",
        "io_operations",
        "definitions",
        "template",
        "generation",
        "quality_gates",
    }
)


@dataclass
class NormalizedContract:
    """A strict contract plus what was read from legacy forms to get there."""

    contract: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    operations: dict[str, str] = field(default_factory=dict)  # name -> description, in order
    backends: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)  # neither ONEX v2.0 nor a known legacy key
    steps: list[str] = field(default_factory=list)  # legacy workflow_steps of an orchestrator


def _bad(source: str, message: str) -> ModelOnexError:
    return ModelOnexError(f"{source}: {message}", EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR)


def _camel(snake_name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-.\s]+", snake_name) if part)


def _node_type(raw: Any, source: str, warn: list[str]) -> str:
    text = str(raw or "").strip()
    lowered = text.lower()
    base = next((t for t in NODE_TYPES if lowered == t or lowered.startswith(f"{t}_")), None)
    if base is None:
        raise _bad(source, f"node_type {raw!r} is none of {', '.join(NODE_TYPES)} (any case, or *_GENERIC)")
    if text != base:
        warn.append(f"node_type {text!r} read as {base!r}")
    return base


def _name(raw: dict[str, Any], node_type: str, warn: list[str]) -> str:
    given = next((str(raw[k]) for k in ("name", "node_name", "contract_name") if raw.get(k)), "")
    if re.fullmatch(r"Node[A-Z][A-Za-z0-9]*", given) and given.endswith(node_type.capitalize()):
        return given
    other = next((t for t in NODE_TYPES if given.endswith(t.capitalize()) and t != node_type), None)
    if other is not None and given.startswith("Node"):
        raise ModelOnexError(
            f"name {given!r} says {other} but node_type says {node_type}",
            EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR,
        )
    stem = re.sub(r"^node[_\-]?", "", given, flags=re.IGNORECASE) or "unnamed"
    camel = _camel(stem)
    if camel.startswith("Node") and camel != "Node":
        camel = camel[4:]
    suffix = node_type.capitalize()
    name = f"Node{camel if camel.endswith(suffix) else camel + suffix}"
    if name == f"Node{suffix}":
        name = f"NodeUnnamed{suffix}"
    warn.append(f"name {given!r} read as {name!r}")
    return name


def _version(raw: dict[str, Any], warn: list[str]) -> dict[str, int]:
    for key in ("version", "node_version", "contract_version"):
        value = raw.get(key)
        parsed = _parse_version(value)
        if parsed is not None:
            if key != "version" or not isinstance(value, dict):
                warn.append(
                    f"{key} {value!r} read as version {parsed['major']}.{parsed['minor']}.{parsed['patch']}"
                )
            return parsed
    warn.append("no version: 1.0.0 assumed")
    return {"major": 1, "minor": 0, "patch": 0}


def _parse_version(value: Any) -> dict[str, int] | None:
    if isinstance(value, dict):
        try:
            return {k: int(value.get(k, 0)) for k in ("major", "minor", "patch")}
        except (TypeError, ValueError):
            return None
    if isinstance(value, str | int | float):
        parts = re.findall(r"\d+", str(value))
        if parts:
            numbers = [int(p) for p in parts[:3]] + [0] * (3 - min(3, len(parts)))
            return {"major": numbers[0], "minor": numbers[1], "patch": numbers[2]}
    return None


def _description(raw: dict[str, Any], name: str, node_type: str, warn: list[str]) -> str:
    description = raw.get("description")
    if not isinstance(description, str) or len(description.strip()) < 10:
        meta = sections.mapping(raw.get("metadata"))
        description = str(meta.get("description") or f"{name}: an ONEX {node_type} node.")
        warn.append("description missing or shorter than 10 characters: taken from metadata or the name")
    return " ".join(description.split())


def _drop_invalid(strict: dict[str, Any], optional: set[str], source: str, warn: list[str]) -> None:
    """Drop optional keys that still break the schema, one at a time, each with a warning."""
    for _ in range(len(optional)):
        problems = contract_problems(strict)
        if not problems:
            return
        key = problems[0].removeprefix("$.").split(".")[0].split("[")[0].split(":")[0]
        if key not in optional or key not in strict:
            raise _bad(source, problems[0])
        warn.append(f"{key} does not follow ONEX v2.0 ({problems[0]}): dropped")
        del strict[key]


def normalize_contract(raw: Any, source: str = "contract") -> NormalizedContract:
    """The strict ONEX v2.0 form of ``raw`` (see the module docstring)."""
    if not isinstance(raw, dict):
        raise _bad(source, f"expected a mapping at the top level, got {type(raw).__name__}")
    warn: list[str] = []
    if "schema_version" not in raw:
        warn.append(f"no schema_version: read as {SCHEMA_VERSION}")
    node_type = _node_type(raw.get("node_type"), source, warn)
    name = _name(raw, node_type, warn)
    description = _description(raw, name, node_type, warn)
    strict: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": _version(raw, warn),
        "node_type": node_type,
        "description": description,
    }
    ops = sections.operations(raw, warn)
    advanced = sections.advanced(raw, warn)
    optional: dict[str, Any] = {
        "capabilities": sections.capabilities(raw.get("capabilities"), warn),
        "endpoints": sections.kept(raw.get("endpoints"), (dict, list)),
        "dependencies": sections.dependencies(raw.get("dependencies"), warn),
        "configuration": sections.configuration(raw.get("configuration"), warn),
        "mixins": sections.kept(raw.get("mixins"), (list,)),
        "advanced_features": advanced or None,
        "subcontracts": sections.subcontracts(raw, warn) or None,
        "performance_targets": sections.performance(raw, warn) or None,
        "health_checks": sections.health_checks(raw.get("health_checks"), warn),
        "input_state": sections.kept(raw.get("input_state"), (dict,)),
        "output_state": sections.kept(raw.get("output_state"), (dict,)),
        "io_operations": sections.io_operations(raw.get("io_operations"), warn),
        "definitions": sections.kept(raw.get("definitions"), (dict,)),
        "template": sections.kept(raw.get("template"), (dict,)),
        "generation": sections.kept(raw.get("generation"), (dict,)),
        "quality_gates": sections.kept(raw.get("quality_gates"), (dict,)),
    }
    if node_type == "effect" and ops:
        subcontracts = optional["subcontracts"] or {}
        given = sections.listed(
            sections.mapping(sections.mapping(raw.get("subcontracts")).get("effect")).get("operations")
        )
        declared = sections.read_operations("", given, {}, []) if given else ops
        kept = {name: ops.get(name, description) for name, description in declared.items()}
        subcontracts["effect"] = {
            **subcontracts.get("effect", {}),
            "operations": sections.effect_operations(kept),
        }
        optional["subcontracts"] = subcontracts
    steps = [
        str(item.get("name") if isinstance(item, dict) else item)
        for item in sections.listed(raw.get("workflow_steps"))
        if isinstance(item, str | dict) and (not isinstance(item, dict) or item.get("name"))
    ]
    if steps:
        warn.append(f"workflow_steps read as the described steps of steps.py: {', '.join(steps)}")
    already = {
        "error_handling",
        "performance_requirements",
        *sections.MOVED_TO_SUBCONTRACTS,
    }  # warned when read
    if steps:
        already.add("workflow_steps")
    for key in sorted(set(raw) - STRICT_KEYS):
        if key not in already:
            warn.append(f"legacy key {key!r} dropped" if key in DROPPED else f"unknown key {key!r} dropped")
    for key, value in optional.items():
        if value is None and key in raw and key not in ("subcontracts", "advanced_features"):
            warn.append(f"{key} has an unexpected shape ({type(raw[key]).__name__}): dropped")
        elif value is not None:
            strict[key] = value
    _drop_invalid(strict, set(optional), source, warn)
    unknown = sorted(k for k in set(raw) - STRICT_KEYS - set(DROPPED) - set(sections.MOVED_TO_SUBCONTRACTS))
    return NormalizedContract(
        strict, warn, ops, sections.backends(raw), sections.features(raw, advanced), unknown, steps
    )


def read_contract(path: Path) -> NormalizedContract:
    """Read and normalise a contract file; unreadable or non-YAML input is a clear error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ModelOnexError(
            f"cannot read contract {path}: {err.strerror or err}", EnumCoreErrorCode.FILE_READ_ERROR
        ) from err
    except UnicodeDecodeError as err:
        raise _bad(str(path), "not UTF-8 text") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _bad(str(path), f"not valid YAML: {err}") from err
    return normalize_contract(data, str(path))
