"""``omninode-generate answers NODE_DIR [KEY=VALUE ...]``: show or change a node's stored answers.

The answers are what ``update`` re-renders from; changing one here records it, and
the next ``omninode-generate update NODE_DIR`` applies it with a 3-way merge (hand
edits kept). The node's identity (name, node type, version) is not an answer to
change in place: regenerate with ``--name``/``--node-type`` for that.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from omninode_bridge.codegen.pipeline import checked_operations
from omninode_bridge.codegen.prompt_text import bad_input
from omninode_bridge.codegen.writer import RECORD_NAME, read_record
from omninode_bridge.core import ModelOnexError

FIXED = frozenset({"name", "node_type", "version", "source"})
SHOWN = ("description", "entity", "domain", "operations", "backends", "features", "performance_targets")


def _value(key: str, text: str, current: Any) -> Any:
    """``text`` parsed like the answer it replaces: lists by commas, numbers, JSON objects."""
    if isinstance(current, list):
        items = [item.strip() for item in text.split(",") if item.strip()]
        return checked_operations(items) if key == "operations" else items
    if isinstance(current, dict):
        try:
            value = json.loads(text)
        except ValueError as err:
            raise bad_input(f"{key} must be a JSON object, e.g. {json.dumps(current)}") from err
        if not isinstance(value, dict):
            raise bad_input(f"{key} must be a JSON object, e.g. {json.dumps(current)}")
        return value
    if isinstance(current, int | float) and not isinstance(current, bool):
        try:
            return type(current)(text)
        except ValueError as err:
            raise bad_input(f"{key} must be a number, got {text!r}") from err
    if key == "description" and len(text.strip()) < 10:
        raise bad_input("description must be at least 10 characters")
    return text


def change_answers(node_dir: Path, assignments: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` assignments to the record's answers; returns the new answers."""
    record = read_record(node_dir)
    answers: dict[str, Any] = record["answers"]
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise bad_input(f"expected KEY=VALUE, got {assignment!r}")
        if key in FIXED:
            raise bad_input(f"{key} cannot be changed in place: regenerate the node with --name/--node-type")
        if key not in answers:
            raise bad_input(f"unknown answer {key!r}; known: {', '.join(sorted(set(answers) - FIXED))}")
        answers[key] = _value(key, text, answers[key])
    record["answers"] = answers
    path = node_dir / RECORD_NAME
    path.write_text(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return answers


@click.command(name="answers", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("node_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("assignments", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print the answers as JSON")
def answers_command(node_dir: Path, assignments: tuple[str, ...], as_json: bool) -> None:
    """Show NODE_DIR's stored answers, or change them with KEY=VALUE (then run update)."""
    try:
        answers = (
            change_answers(node_dir, list(assignments)) if assignments else read_record(node_dir)["answers"]
        )
    except ModelOnexError as err:
        click.echo(f"omninode-generate answers: error: {err.message}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(answers, indent=2, sort_keys=True))
    else:
        for key in ("name", "node_type", "version", *SHOWN):
            if key in answers:
                value = answers[key]
                text = ", ".join(map(str, value)) if isinstance(value, list) else value
                click.echo(f"{key:<20} {text}")
    if assignments:
        click.echo(f"answers changed; apply them with: omninode-generate update {node_dir}", err=True)
