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

from omninode_bridge.codegen.lexicon import BACKENDS
from omninode_bridge.core.contract import contract_problems
from omninode_bridge.core.errors import EnumCoreErrorCode, ModelOnexError

NODE_TYPES = ("effect", "compute", "reducer", "orchestrator")
SCHEMA_VERSION = "v2.0.0"
LIFECYCLE = frozenset({"initialize", "shutdown", "cleanup", "health_check", "health", "metrics", "process"})
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
MOVED_TO_SUBCONTRACTS = ("fsm", "aggregation", "state_management", "routing")
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
SUBCONTRACT_FEATURES = {
    "metrics": "metrics",
    "health": "health",
    "retry": "retry",
    "circuit": "circuit_breaker",
}
_OP_LINE = re.compile(r"^\s*[-*]\s*([a-z][a-z0-9_.]*)\s*:\s*(.+?)\s*$", re.MULTILINE)


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


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one (odd shapes never crash the reader)."""
    return value if isinstance(value, dict) else {}


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


def _op_name(raw: Any) -> str | None:
    if isinstance(raw, dict):
        raw = raw.get("name") or raw.get("operation") or raw.get("operation_name")
    if not isinstance(raw, str) or not raw.strip():
        return None
    return re.sub(r"[^a-z0-9_]+", "_", raw.strip().lower()).strip("_") or None


def _describe_op(raw: Any) -> str:
    return str(raw.get("description") or "") if isinstance(raw, dict) else ""


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _operation_sources(raw: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    effect = _mapping(_mapping(raw.get("subcontracts")).get("effect"))
    props = _mapping(_mapping(raw.get("input_state")).get("properties"))
    op_type = _mapping(props.get("operation_type") or props.get("operation"))
    handlers = _mapping(raw.get("handler_routing")).get("handlers")
    routed = [
        op
        for handler in (handlers if isinstance(handlers, list) else [])
        if isinstance(handler, dict)
        for op in _listed(handler.get("supported_operations")) or [handler.get("operation")]
    ]
    return [
        (
            "io_operations",
            [op for op in raw.get("io_operations") or [] if isinstance(op, dict) and "name" in op],
        ),
        ("subcontracts.effect.operations", list((effect or {}).get("operations") or [])),
        ("operations", list(raw.get("operations") or []) if isinstance(raw.get("operations"), list) else []),
        (
            "input_state operation_type enum",
            list(op_type.get("enum") or []) if isinstance(op_type, dict) else [],
        ),
        ("handler_routing", routed),
        (
            "capabilities",
            list(raw.get("capabilities") or []) if isinstance(raw.get("capabilities"), list) else [],
        ),
    ]


def _read_operations(
    source: str, items: list[Any], described: dict[str, str], warn: list[str]
) -> dict[str, str]:
    ops: dict[str, str] = {}
    plain, renamed, lifecycle = 0, [], []
    for item in items:
        name = _op_name(item)
        if name is None or name in LIFECYCLE:
            lifecycle += [name] if name else []
            continue
        original = item.get("name") or item.get("operation") if isinstance(item, dict) else item
        if isinstance(original, str) and original.strip() != name:
            renamed.append(f"{original.strip()!r} -> {name!r}")
        plain += isinstance(item, str)
        ops.setdefault(name, _describe_op(item) or described.get(name, ""))
    if lifecycle:
        warn.append(f"{source}: lifecycle methods {', '.join(lifecycle)} are not operations; left out")
    if plain:
        warn.append(f"{source}: {plain} operation(s) given as plain strings")
    if renamed:
        warn.append(f"{source}: operation names made snake_case: {', '.join(renamed)}")
    return ops


def _operations(raw: dict[str, Any], warn: list[str]) -> dict[str, str]:
    """Operation names with descriptions, from the first source that declares real ones.

    Descriptions missing at the source are taken from ``capabilities`` of the same name
    or from "- name: what it does" lines in the contract's description.
    """
    described = {
        m.group(1).replace(".", "_"): m.group(2) for m in _OP_LINE.finditer(str(raw.get("description")))
    }
    for item in raw.get("capabilities") or [] if isinstance(raw.get("capabilities"), list) else []:
        if isinstance(item, dict) and (name := _op_name(item)) and item.get("description"):
            described.setdefault(name, str(item["description"]))
    ops: dict[str, str] = {}
    for source, items in _operation_sources(raw):
        strict_source = source in ("io_operations", "subcontracts.effect.operations")
        if ops and not strict_source:
            return ops  # the strict sources declared operations: legacy ones are not read
        found = _read_operations(source, items, described, warn)
        for name, description in found.items():
            ops.setdefault(name, description or ops.get(name, ""))
        if found and not strict_source:
            warn.append(f"operations read from {source}")
            return ops
    if ops:
        return ops
    warn.append("no operations declared: the node type's default operations are generated")
    return {}


def _backends(raw: dict[str, Any]) -> list[str]:
    names: list[str] = []
    deps = raw.get("dependencies")
    services = deps.get("services") if isinstance(deps, dict) else deps
    for item in services if isinstance(services, list) else []:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str):
            names.append(name.lower())
    subcontracts = raw.get("subcontracts")
    if isinstance(subcontracts, list):
        names += [str(s.get("type", "")).split("_")[0] for s in subcontracts if isinstance(s, dict)]
    if raw.get("kafka") or raw.get("event_bus"):
        names.append("kafka")
    found = [BACKENDS[n] for n in names if n in BACKENDS]
    return list(dict.fromkeys(found))


def _features(raw: dict[str, Any], advanced: dict[str, Any]) -> list[str]:
    features = [
        f for f, key in (("retry", "retry_policy"), ("circuit_breaker", "circuit_breaker")) if key in advanced
    ]
    subcontracts = raw.get("subcontracts")
    for item in subcontracts if isinstance(subcontracts, list) else []:
        kind = str(item.get("type", "")) if isinstance(item, dict) else ""
        features += [f for word, f in SUBCONTRACT_FEATURES.items() if word in kind]
    return list(dict.fromkeys(features))


def _advanced(raw: dict[str, Any], warn: list[str]) -> dict[str, Any]:
    advanced = dict(raw["advanced_features"]) if isinstance(raw.get("advanced_features"), dict) else {}
    handling = raw.get("error_handling")
    if isinstance(handling, dict):
        for key in ("retry_policy", "circuit_breaker"):
            if isinstance(handling.get(key), dict) and handling[key].get("enabled", True) is not False:
                advanced.setdefault(key, dict(handling[key]))
                warn.append(f"error_handling.{key} moved to advanced_features.{key}")
    return advanced


def _performance(raw: dict[str, Any], warn: list[str]) -> dict[str, Any]:
    targets = dict(raw["performance_targets"]) if isinstance(raw.get("performance_targets"), dict) else {}
    legacy = raw.get("performance_requirements")
    if isinstance(legacy, dict):
        execution = _mapping(legacy.get("execution_time"))
        throughput = _mapping(legacy.get("throughput"))
        if isinstance(execution.get("target_ms"), int | float):
            targets.setdefault("latency_ms_p95", float(execution["target_ms"]))
        if isinstance(throughput.get("target_operations_per_second"), int | float):
            targets.setdefault("throughput_rps", float(throughput["target_operations_per_second"]))
        warn.append("performance_requirements read as performance_targets")
    return targets


def _subcontracts(raw: dict[str, Any], warn: list[str]) -> dict[str, Any]:
    value = raw.get("subcontracts")
    subcontracts: dict[str, Any] = {}
    if isinstance(value, dict):
        subcontracts = {k: v for k, v in value.items() if isinstance(v, dict)}
        effect = subcontracts.get("effect")
        if effect is not None and "operations" in effect:  # rebuilt from the operations read
            subcontracts["effect"] = {k: v for k, v in effect.items() if k != "operations"}
            if not subcontracts["effect"]:
                del subcontracts["effect"]
    elif isinstance(value, list):
        warn.append("subcontracts given as a list: its items are read as backends and features")
    for key in MOVED_TO_SUBCONTRACTS:
        if isinstance(raw.get(key), dict):
            subcontracts.setdefault(key, raw[key])
            warn.append(f"top-level {key} moved to subcontracts.{key}")
    return subcontracts


def _capabilities(value: Any, warn: list[str]) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, str):
            warn.append(f"capability {item!r} given as a plain string")
            out.append({"name": item})
        elif isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
            out.append({"name": item["name"], "description": str(item.get("description") or "")})
    return out


def _dependencies(value: Any, warn: list[str]) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not isinstance(value, list):
        return None
    warn.append("dependencies given as a list: read as dependencies.services")
    services = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name:
            entry: dict[str, Any] = {"name": name}
            if isinstance(item, dict):
                entry["required"] = bool(item.get("required", False))
                entry["description"] = str(item.get("description") or item.get("type") or name)
            services.append(entry)
    return {"services": services}


def _configuration(value: Any, warn: list[str]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            out[str(key)] = {**item, "description": str(item.get("description") or key)}
        else:
            warn.append(f"configuration.{key} given as a bare value: read as its default")
            out[str(key)] = {"default": item, "description": str(key)}
    return out


def _health_checks(value: Any, warn: list[str]) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not isinstance(value, list):
        return None
    warn.append("health_checks given as a list: read as health_checks.components")
    components = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name:
            components.append(
                {"name": name, "critical": bool(isinstance(item, dict) and item.get("critical"))}
            )
    return {"components": components}


def _io_operations(value: Any, warn: list[str]) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    out = []
    for i, item in enumerate(value):
        name = _op_name(item) if isinstance(item, dict) and "name" in item else None
        if name is None:
            kind = item.get("operation_type") if isinstance(item, dict) else item
            warn.append(f"io_operations[{i}] has no name (operation_type {kind!r}): dropped")
            continue
        entry = {"name": name, "description": _describe_op(item)}
        entry.update(
            {k: str(item[k]) for k in ("input_model", "output_model") if isinstance(item.get(k), str)}
        )
        out.append(entry)
    return out


def _kept(value: Any, types: tuple[type, ...]) -> Any:
    return value if isinstance(value, types) else None


def _effect_operations(ops: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "description": description} for name, description in ops.items()]


def _description(raw: dict[str, Any], name: str, node_type: str, warn: list[str]) -> str:
    description = raw.get("description")
    if not isinstance(description, str) or len(description.strip()) < 10:
        meta = _mapping(raw.get("metadata"))
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
    ops = _operations(raw, warn)
    advanced = _advanced(raw, warn)
    optional: dict[str, Any] = {
        "capabilities": _capabilities(raw.get("capabilities"), warn),
        "endpoints": _kept(raw.get("endpoints"), (dict, list)),
        "dependencies": _dependencies(raw.get("dependencies"), warn),
        "configuration": _configuration(raw.get("configuration"), warn),
        "mixins": _kept(raw.get("mixins"), (list,)),
        "advanced_features": advanced or None,
        "subcontracts": _subcontracts(raw, warn) or None,
        "performance_targets": _performance(raw, warn) or None,
        "health_checks": _health_checks(raw.get("health_checks"), warn),
        "input_state": _kept(raw.get("input_state"), (dict,)),
        "output_state": _kept(raw.get("output_state"), (dict,)),
        "io_operations": _io_operations(raw.get("io_operations"), warn),
        "definitions": _kept(raw.get("definitions"), (dict,)),
        "template": _kept(raw.get("template"), (dict,)),
        "generation": _kept(raw.get("generation"), (dict,)),
        "quality_gates": _kept(raw.get("quality_gates"), (dict,)),
    }
    if node_type == "effect" and ops:
        subcontracts = optional["subcontracts"] or {}
        given = _listed(_mapping(_mapping(raw.get("subcontracts")).get("effect")).get("operations"))
        declared = _read_operations("", given, {}, []) if given else ops
        kept = {name: ops.get(name, description) for name, description in declared.items()}
        subcontracts["effect"] = {**subcontracts.get("effect", {}), "operations": _effect_operations(kept)}
        optional["subcontracts"] = subcontracts
    steps = [
        str(item.get("name") if isinstance(item, dict) else item)
        for item in _listed(raw.get("workflow_steps"))
        if isinstance(item, str | dict) and (not isinstance(item, dict) or item.get("name"))
    ]
    if steps:
        warn.append(f"workflow_steps read as the described steps of steps.py: {', '.join(steps)}")
    already = {"error_handling", "performance_requirements", *MOVED_TO_SUBCONTRACTS}  # warned when read
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
    unknown = sorted(k for k in set(raw) - STRICT_KEYS - set(DROPPED) - set(MOVED_TO_SUBCONTRACTS))
    return NormalizedContract(strict, warn, ops, _backends(raw), _features(raw, advanced), unknown, steps)


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
