"""Readers of each section of an ONEX contract, strict or legacy (see :mod:`.contract_compat`).

Each takes the raw value (any shape: a mapping, a list, a string, None) and returns the
strict form or None, appending one warning per legacy form it read. None of them raises.
"""

from __future__ import annotations

import re
from typing import Any

from omninode_bridge.codegen.lexicon import BACKENDS

LIFECYCLE = frozenset({"initialize", "shutdown", "cleanup", "health_check", "health", "metrics", "process"})
MOVED_TO_SUBCONTRACTS = ("fsm", "aggregation", "state_management", "routing")
SUBCONTRACT_FEATURES = {
    "metrics": "metrics",
    "health": "health",
    "retry": "retry",
    "circuit": "circuit_breaker",
}
_OP_LINE = re.compile(r"^\s*[-*]\s*([a-z][a-z0-9_.]*)\s*:\s*(.+?)\s*$", re.MULTILINE)


def mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one (odd shapes never crash the reader)."""
    return value if isinstance(value, dict) else {}


def op_name(raw: Any) -> str | None:
    if isinstance(raw, dict):
        raw = raw.get("name") or raw.get("operation") or raw.get("operation_name")
    if not isinstance(raw, str) or not raw.strip():
        return None
    return re.sub(r"[^a-z0-9_]+", "_", raw.strip().lower()).strip("_") or None


def describe_op(raw: Any) -> str:
    return str(raw.get("description") or "") if isinstance(raw, dict) else ""


def listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def operation_sources(raw: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    effect = mapping(mapping(raw.get("subcontracts")).get("effect"))
    props = mapping(mapping(raw.get("input_state")).get("properties"))
    op_type = mapping(props.get("operation_type") or props.get("operation"))
    handlers = mapping(raw.get("handler_routing")).get("handlers")
    routed = [
        op
        for handler in (handlers if isinstance(handlers, list) else [])
        if isinstance(handler, dict)
        for op in listed(handler.get("supported_operations")) or [handler.get("operation")]
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


def read_operations(
    source: str, items: list[Any], described: dict[str, str], warn: list[str]
) -> dict[str, str]:
    ops: dict[str, str] = {}
    plain, renamed, lifecycle = 0, [], []
    for item in items:
        name = op_name(item)
        if name is None or name in LIFECYCLE:
            lifecycle += [name] if name else []
            continue
        original = item.get("name") or item.get("operation") if isinstance(item, dict) else item
        if isinstance(original, str) and original.strip() != name:
            renamed.append(f"{original.strip()!r} -> {name!r}")
        plain += isinstance(item, str)
        ops.setdefault(name, describe_op(item) or described.get(name, ""))
    if lifecycle:
        warn.append(f"{source}: lifecycle methods {', '.join(lifecycle)} are not operations; left out")
    if plain:
        warn.append(f"{source}: {plain} operation(s) given as plain strings")
    if renamed:
        warn.append(f"{source}: operation names made snake_case: {', '.join(renamed)}")
    return ops


def operations(raw: dict[str, Any], warn: list[str]) -> dict[str, str]:
    """Operation names with descriptions, from the first source that declares real ones.

    Descriptions missing at the source are taken from ``capabilities`` of the same name
    or from "- name: what it does" lines in the contract's description.
    """
    described = {
        m.group(1).replace(".", "_"): m.group(2) for m in _OP_LINE.finditer(str(raw.get("description")))
    }
    for item in raw.get("capabilities") or [] if isinstance(raw.get("capabilities"), list) else []:
        if isinstance(item, dict) and (name := op_name(item)) and item.get("description"):
            described.setdefault(name, str(item["description"]))
    ops: dict[str, str] = {}
    for source, items in operation_sources(raw):
        strict_source = source in ("io_operations", "subcontracts.effect.operations")
        if ops and not strict_source:
            return ops  # the strict sources declared operations: legacy ones are not read
        found = read_operations(source, items, described, warn)
        for name, description in found.items():
            ops.setdefault(name, description or ops.get(name, ""))
        if found and not strict_source:
            warn.append(f"operations read from {source}")
            return ops
    if ops:
        return ops
    warn.append("no operations declared: the node type's default operations are generated")
    return {}


def backends(raw: dict[str, Any]) -> list[str]:
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


def features(raw: dict[str, Any], advanced: dict[str, Any]) -> list[str]:
    features = [
        f for f, key in (("retry", "retry_policy"), ("circuit_breaker", "circuit_breaker")) if key in advanced
    ]
    subcontracts = raw.get("subcontracts")
    for item in subcontracts if isinstance(subcontracts, list) else []:
        kind = str(item.get("type", "")) if isinstance(item, dict) else ""
        features += [f for word, f in SUBCONTRACT_FEATURES.items() if word in kind]
    return list(dict.fromkeys(features))


def advanced(raw: dict[str, Any], warn: list[str]) -> dict[str, Any]:
    advanced = dict(raw["advanced_features"]) if isinstance(raw.get("advanced_features"), dict) else {}
    handling = raw.get("error_handling")
    if isinstance(handling, dict):
        for key in ("retry_policy", "circuit_breaker"):
            if isinstance(handling.get(key), dict) and handling[key].get("enabled", True) is not False:
                advanced.setdefault(key, dict(handling[key]))
                warn.append(f"error_handling.{key} moved to advanced_features.{key}")
    return advanced


def performance(raw: dict[str, Any], warn: list[str]) -> dict[str, Any]:
    targets = dict(raw["performance_targets"]) if isinstance(raw.get("performance_targets"), dict) else {}
    legacy = raw.get("performance_requirements")
    if isinstance(legacy, dict):
        execution = mapping(legacy.get("execution_time"))
        throughput = mapping(legacy.get("throughput"))
        if isinstance(execution.get("target_ms"), int | float):
            targets.setdefault("latency_ms_p95", float(execution["target_ms"]))
        if isinstance(throughput.get("target_operations_per_second"), int | float):
            targets.setdefault("throughput_rps", float(throughput["target_operations_per_second"]))
        warn.append("performance_requirements read as performance_targets")
    return targets


def subcontracts(raw: dict[str, Any], warn: list[str]) -> dict[str, Any]:
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


def capabilities(value: Any, warn: list[str]) -> list[dict[str, Any]] | None:
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


def dependencies(value: Any, warn: list[str]) -> dict[str, Any] | None:
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


def configuration(value: Any, warn: list[str]) -> dict[str, Any] | None:
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


def health_checks(value: Any, warn: list[str]) -> dict[str, Any] | None:
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


def io_operations(value: Any, warn: list[str]) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    out = []
    for i, item in enumerate(value):
        name = op_name(item) if isinstance(item, dict) and "name" in item else None
        if name is None:
            kind = item.get("operation_type") if isinstance(item, dict) else item
            warn.append(f"io_operations[{i}] has no name (operation_type {kind!r}): dropped")
            continue
        entry = {"name": name, "description": describe_op(item)}
        entry.update(
            {k: str(item[k]) for k in ("input_model", "output_model") if isinstance(item.get(k), str)}
        )
        out.append(entry)
    return out


def kept(value: Any, types: tuple[type, ...]) -> Any:
    return value if isinstance(value, types) else None


def effect_operations(ops: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "description": description} for name, description in ops.items()]
