"""ONEX compliance rules shared by the validation stage and ``omninode-check``.

Static (AST) checks, so they also run on hand-written nodes without importing them:
the node class subclasses the right ``omninode_bridge.core`` base, every
``EnumCoreErrorCode`` member referenced exists, the contract is valid, and every
contract operation has a handler and vice versa.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml

from omninode_bridge.codegen.contract_compat import read_contract
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError
from omninode_bridge.core.contract import contract_operations

SUFFIX_BASE = {
    "Effect": "NodeEffect",
    "Compute": "NodeCompute",
    "Reducer": "NodeReducer",
    "Orchestrator": "NodeOrchestrator",
}
SKIP_DIRS = {"__pycache__", ".venv", "venv", "node_modules", ".git", ".mypy_cache", ".ruff_cache"}


def _python_files(node_dir: Path) -> list[Path]:
    return sorted(p for p in node_dir.rglob("*.py") if not SKIP_DIRS & set(p.parts))


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None


def referenced_error_codes(node_dir: Path) -> dict[str, list[str]]:
    """``EnumCoreErrorCode.<MEMBER>`` references: member -> files using it."""
    found: dict[str, list[str]] = {}
    for path in _python_files(node_dir):
        tree = _parse(path)
        for node in ast.walk(tree) if tree else ():
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "EnumCoreErrorCode"
            ):
                found.setdefault(node.attr, []).append(str(path.relative_to(node_dir)))
    return found


def _node_class(tree: ast.Module) -> ast.ClassDef | None:
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and any(
            stmt.name.startswith("Node") and stmt.name.endswith(suffix) for suffix in SUFFIX_BASE
        ):
            return stmt
    return None


def _core_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("omninode_bridge.core"):
            names.update(alias.asname or alias.name for alias in stmt.names)
    return names


def _handlers(cls: ast.ClassDef) -> set[str]:
    return {
        stmt.name.removeprefix("_handle_")
        for stmt in cls.body
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("_handle_")
    }


def _methods(cls: ast.ClassDef) -> set[str]:
    return {s.name for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _class_rules(cls: ast.ClassDef, tree: ast.Module) -> list[str]:
    suffix = next(s for s in SUFFIX_BASE if cls.name.endswith(s))
    expected = SUFFIX_BASE[suffix]
    bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases}
    if expected not in bases:
        return [f"base-class: {cls.name} must subclass {expected}, found {sorted(bases) or 'none'}"]
    if expected not in _core_imports(tree):
        return [f"base-class: {expected} must be imported from omninode_bridge.core"]
    return []


def _contract_rules(node_dir: Path, cls: ast.ClassDef | None) -> tuple[list[str], dict[str, Any]]:
    path = node_dir / "contract.yaml"
    if not path.exists():
        return ["contract: contract.yaml is missing"], {}
    try:
        normalized = read_contract(path)  # legacy forms are warnings (contract_warnings)
    except ModelOnexError as err:
        return [f"contract: {err.message}"], {}
    contract = normalized.contract
    problems = []
    if normalized.unknown_keys:
        problems.append(f"contract: unknown top-level key(s): {', '.join(normalized.unknown_keys)}")
    if cls is not None and contract["name"] != cls.name:
        problems.append(f"contract: name {contract['name']} differs from class {cls.name}")
    return problems, contract


def contract_warnings(node_dir: Path) -> list[str]:
    """Legacy forms in the folder's contract.yaml that were read leniently."""
    path = node_dir / "contract.yaml"
    try:
        return read_contract(path).warnings if path.is_file() else []
    except ModelOnexError:
        return []  # reported as a problem by check_node_dir


def check_node_dir(node_dir: Path) -> list[str]:
    """Violations of the ONEX rules in ``node_dir`` (empty list: compliant)."""
    problems: list[str] = []
    tree = _parse(node_dir / "node.py") if (node_dir / "node.py").exists() else None
    cls = _node_class(tree) if tree else None
    if tree is None:
        problems.append("node: node.py is missing or not valid Python")
    elif cls is None:
        problems.append("node: node.py defines no Node<Name><Effect|Compute|Reducer|Orchestrator> class")
    else:
        problems.extend(_class_rules(cls, tree))
    for member, files in sorted(referenced_error_codes(node_dir).items()):
        if not hasattr(EnumCoreErrorCode, member):
            problems.append(
                f"error-code: EnumCoreErrorCode.{member} does not exist (used in {', '.join(sorted(set(files)))})"
            )
    contract_problems, contract = _contract_rules(node_dir, cls)
    problems.extend(contract_problems)
    if contract and cls is not None:
        declared = set(contract_operations(contract))
        handlers = _handlers(cls)
        methods = _methods(cls)
        for op in sorted(declared):
            if op not in handlers and op not in methods:
                problems.append(f"operations: contract operation {op!r} has no handler (_handle_{op})")
        for op in sorted(handlers - declared):
            problems.append(f"operations: handler _handle_{op} has no contract operation")
    return problems


def is_node_dir(path: Path) -> bool:
    """A folder that holds a node: ``contract.yaml`` or ``node.py`` with a node class."""
    if (path / "contract.yaml").is_file():
        try:
            data = yaml.safe_load((path / "contract.yaml").read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError):
            return True
        return isinstance(data, dict) and ("node_type" in data or "name" in data)
    return (path / "node.py").is_file()
