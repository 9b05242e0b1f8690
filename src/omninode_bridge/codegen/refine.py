"""Stage 7: refinement — ``ruff check --fix`` and ``ruff format`` on the generated code.

The code is formatted to the host repository's ruff settings: the nearest
``ruff.toml``, ``.ruff.toml`` or ``pyproject.toml`` with a ``[tool.ruff]`` table at
or above the output folder gives the line length and the lint rules (``select``,
``extend-select``, ``ignore``). Ruff then runs ``--isolated`` with exactly those
values, so the same input and the same host settings give byte-identical output.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LINE_LENGTH = 100
DEFAULT_SELECT = ("E", "F", "W", "I", "B", "UP", "C90", "SIM", "RUF", "ASYNC")
DEFAULT_IGNORE = ("RUF012",)
RUFF_ISORT = ["--config", "lint.isort.known-first-party = ['omninode_bridge']"]


@dataclass(frozen=True)
class RuffStyle:
    """The ruff settings generated code is formatted and linted with."""

    line_length: int = DEFAULT_LINE_LENGTH
    select: tuple[str, ...] = DEFAULT_SELECT
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    source: str = "omninode-generate defaults"
    notes: list[str] = field(default_factory=list, compare=False)

    def settings(self) -> list[str]:
        return ["--isolated", "--line-length", str(self.line_length), "--target-version", "py311"]

    def rules(self) -> list[str]:
        return ["--select", ",".join(self.select), "--ignore", ",".join(self.ignore)]


def _ruff_table(path: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("ruff")
        return table if isinstance(table, dict) else None
    return data


def host_style(start: Path) -> RuffStyle:
    """The ruff settings of the repository holding ``start`` (defaults when there is none)."""
    for folder in [start, *start.parents]:
        for name in ("ruff.toml", ".ruff.toml", "pyproject.toml"):
            table = _ruff_table(folder / name) if (folder / name).is_file() else None
            if table is not None:
                return _style_from(table, folder / name)
    return RuffStyle()


def style_record(style: RuffStyle) -> dict[str, Any]:
    """What a generation record keeps of ``style`` (no path: records move with their node)."""
    return {"line_length": style.line_length, "select": list(style.select), "ignore": list(style.ignore)}


def recorded_style(data: Any, fallback: RuffStyle) -> RuffStyle:
    """The style a record kept (see :func:`style_record`); ``fallback`` for older records."""
    if not isinstance(data, dict):
        return fallback
    length = data.get("line_length")
    select, ignore = _codes(data.get("select")), _codes(data.get("ignore"))
    if not isinstance(length, int) or not 40 <= length <= 320 or not select:
        return fallback
    return RuffStyle(line_length=length, select=select, ignore=ignore, source="the generation record")


def _codes(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _style_from(table: dict[str, Any], path: Path) -> RuffStyle:
    found = table.get("lint")
    lint: dict[str, Any] = found if isinstance(found, dict) else {}
    length = table.get("line-length", DEFAULT_LINE_LENGTH)
    select = _codes(lint.get("select", table.get("select"))) or DEFAULT_SELECT
    select += _codes(lint.get("extend-select", table.get("extend-select")))
    ignore = _codes(lint.get("ignore", table.get("ignore")))
    return RuffStyle(
        line_length=int(length) if isinstance(length, int) and 40 <= length <= 320 else DEFAULT_LINE_LENGTH,
        select=tuple(dict.fromkeys(select)),
        ignore=tuple(dict.fromkeys([*ignore, *DEFAULT_IGNORE])),
        source=str(path),
    )


def ruff_executable() -> str | None:
    """The ruff binary next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "ruff"
    if beside.exists():
        return str(beside)
    return shutil.which("ruff")


@dataclass
class RefineReport:
    """What refinement did."""

    ran: bool
    changed_files: list[str]
    detail: str = ""


def refine(root: Path, style: RuffStyle | None = None) -> RefineReport:
    """Auto-fix and format every Python file below ``root`` in place, to ``style``."""
    style = style or RuffStyle()
    ruff = ruff_executable()
    if ruff is None:
        return RefineReport(False, [], "ruff not found; code left as rendered")
    before = {p: p.read_bytes() for p in sorted(root.rglob("*.py"))}
    fix = [ruff, "check", *style.settings(), *RUFF_ISORT, *style.rules(), "--fix-only", "-q", str(root)]
    fmt = [ruff, "format", *style.settings(), "-q", str(root)]
    for cmd in (fix, fmt):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode not in (0, 1):
            return RefineReport(True, [], f"ruff failed: {proc.stderr.strip()[:300]}")
    changed = [str(p.relative_to(root)) for p, data in before.items() if p.read_bytes() != data]
    return RefineReport(True, changed)


def lint_command(root: Path, style: RuffStyle | None = None) -> list[str] | None:
    """The ``ruff check`` command of the validation stage (None without ruff)."""
    ruff = ruff_executable()
    if ruff is None:
        return None
    style = style or RuffStyle()
    return [
        ruff,
        "check",
        *style.settings(),
        *RUFF_ISORT,
        *style.rules(),
        "--output-format",
        "concise",
        str(root),
    ]
