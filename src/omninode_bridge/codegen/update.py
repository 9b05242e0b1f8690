"""``omninode-generate update NODE_DIR``: re-render with current templates and 3-way merge.

base = the pristine files of the last generation (kept in the record),
ours = the files on disk (with hand edits), theirs = a fresh render of the
stored answers on the current templates. Clean merges are applied together;
a conflict changes nothing and is reported as hunks (exit 1), unless
``--conflicts inline``: then the conflicting regions are written into the files
between ``<<<<<<< yours`` / ``>>>>>>> template`` markers (copier's way) and the
record's base becomes the new render, so once the markers are resolved by hand the
next ``update`` sees "changed only locally" and keeps the resolution. Files still
holding markers stop every later update until they are resolved.

Two kinds of hand edit are never merged: a generated file the user deleted stays
deleted, and a file the user has taken over whole (a comment line
``omninode-generate: hand-owned``, see :func:`.writer.is_hand_owned`) is kept byte for
byte whatever the template did. The re-render uses the ruff style the record kept, so
a node folder copied elsewhere updates the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from merge3 import Merge3

from omninode_bridge.codegen.contract_builder import contract_hash
from omninode_bridge.codegen.pipeline import render_node
from omninode_bridge.codegen.refine import RuffStyle, host_style, recorded_style, refine, style_record
from omninode_bridge.codegen.render import MARKER, Renderer, node_paths
from omninode_bridge.codegen.spec import NodeAnswers
from omninode_bridge.codegen.writer import (
    CONFLICT_END,
    CONFLICT_START,
    RECORD_NAME,
    Staging,
    has_markers,
    is_hand_owned,
    make_record,
    read_record,
)
from omninode_bridge.core import ModelOnexError


@dataclass
class UpdateResult:
    """Per-file outcome of an update."""

    node_dir: str
    old_template_version: str
    new_template_version: str
    actions: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    inline: dict[str, str] = field(default_factory=dict)  # files given conflict markers: their hunks
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge3(ours: str, base: str, theirs: str) -> tuple[str, bool]:
    """3-way merge of one file (PyPI ``merge3``, no git needed); returns (text, conflicted)."""
    merge = Merge3(base.splitlines(True), ours.splitlines(True), theirs.splitlines(True))
    text = "".join(merge.merge_lines(name_a="yours", name_b="template"))
    return text, any(region[0] == "conflict" for region in merge.merge_regions())


def _render_theirs(
    answers: NodeAnswers, renderer: Renderer, style: RuffStyle
) -> tuple[dict[str, str], dict[str, Any]]:
    contract, files, package_init = render_node(answers, renderer)
    package, vdir = node_paths(answers)
    staging = Staging(None, package, vdir)
    try:
        staging.put(files, package_init)
        refine(staging.root, style)
        return staging.read(), contract
    finally:
        staging.discard()


def _on_disk(node_dir: Path, names: set[str]) -> dict[str, str]:
    return {rel: (node_dir / rel).read_text(encoding="utf-8") for rel in names if (node_dir / rel).is_file()}


HUNK_CONTEXT = 2


def conflict_hunks(merged: str, context: int = HUNK_CONTEXT) -> str:
    """The conflicting regions of ``merged`` with ``context`` lines around each, numbered."""
    lines = merged.splitlines()
    spans: list[tuple[int, int]] = []
    start = None
    for i, line in enumerate(lines):
        if line.startswith(CONFLICT_START):
            start = i
        elif line.startswith(CONFLICT_END) and start is not None:
            spans.append((max(0, start - context), min(len(lines), i + 1 + context)))
            start = None
    out = []
    for first, last in spans:
        out.append(f"@@ lines {first + 1}-{last} @@")
        out.extend(f"{n + 1:>5} {lines[n]}" for n in range(first, last))
    return "\n".join(out)


def restamp(text: str | None, old_version: str, new_version: str) -> str | None:
    """``text`` with the generator's version stamp ``(template OLD`` moved to NEW.

    Every generated file names its template version next to the marker, so a new
    template version changes a line in every file; a hand edit next to that line would
    conflict with a change nobody made. The stamp is moved in base and ours before the
    merge, so it follows the template and the hand edits around it stay theirs alone.
    """
    if text is None or old_version == new_version:
        return text
    return text.replace(f"{MARKER} (template {old_version}", f"{MARKER} (template {new_version}")


def _decide(
    rel: str,
    b: str | None,
    o: str | None,
    t: str | None,
    result: UpdateResult,
    inline: bool = False,
    versions: tuple[str, str] = ("", ""),
) -> str | None:
    """The new content of ``rel`` (None: absent); records the action or a conflict."""
    if has_markers(o):
        result.conflicts[rel] = "unresolved conflict markers from an earlier update: resolve them first"
        return o
    if o is not None and is_hand_owned(o):
        result.actions[rel] = "unchanged" if o == t else "kept (hand-owned)"
        return o
    if o is None and b is not None:
        result.actions[rel] = "kept removed (yours)" if t is not None else "removed (template)"
        return None
    b, o = restamp(b, *versions), restamp(o, *versions)
    if t == b or o == t:
        result.actions[rel] = "unchanged" if o == b else "kept (hand edits)"
        return o
    if o == b:
        result.actions[rel] = "removed (template)" if t is None else "updated (template)"
        return t
    if o is None or t is None or b is None:
        result.conflicts[rel] = "changed locally and in the template"
        return o
    merged, conflicted = merge3(o, b, t)
    if conflicted and inline:
        result.actions[rel] = "CONFLICT markers written (resolve, then run update again)"
        result.inline[rel] = conflict_hunks(merged)
        return merged
    if conflicted:
        result.conflicts[rel] = "conflicting edits:\n" + conflict_hunks(merged)
        return o
    result.actions[rel] = "merged (hand edits + template)"
    return merged


def update_node(
    node_dir: Path, template_dir: Path | None = None, dry_run: bool = False, inline: bool = False
) -> UpdateResult:
    """Update ``node_dir`` in place (all files or none); ``inline`` writes conflict markers."""
    node_dir = node_dir.resolve()
    record = read_record(node_dir)
    renderer = Renderer(template_dir)
    style = recorded_style(record.get("style"), host_style(node_dir))
    theirs, contract = _render_theirs(record["answers"], renderer, style)
    base: dict[str, str] = record["pristine"]
    names = set(base) | set(theirs)
    ours = _on_disk(node_dir, names)
    result = UpdateResult(str(node_dir), record["template_version"], renderer.template_version)
    new: dict[str, str | None] = {}
    for rel in sorted(names):
        new[rel] = _decide(
            rel,
            base.get(rel),
            ours.get(rel),
            theirs.get(rel),
            result,
            inline,
            (record["template_version"], renderer.template_version),
        )
    if result.conflicts or dry_run:
        return result
    for rel, text in new.items():
        if rel.endswith(".py") and text is not None and rel not in result.inline:
            try:
                compile(text, rel, "exec")
            except SyntaxError as err:
                result.conflicts[rel] = f"merge result does not compile: {err}"
    if result.conflicts:
        return result
    _apply(
        node_dir,
        new,
        ours,
        make_record(
            record["answers"],
            renderer.template_version,
            contract_hash(contract),
            theirs,
            style_record(style) if "style" in record else None,
        ),
    )
    result.applied = True
    return result


def _apply(node_dir: Path, new: dict[str, str | None], ours: dict[str, str], record: str) -> None:
    """Build the updated folder beside ``node_dir`` and swap it in with renames."""
    work = Path(tempfile.mkdtemp(prefix=f".{node_dir.name}.", suffix=".omninode-tmp", dir=node_dir.parent))
    staged = work / node_dir.name
    shutil.copytree(node_dir, staged, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in new.items():
        path = staged / rel
        if text is None:
            path.unlink(missing_ok=True)
        elif text != ours.get(rel):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    (staged / RECORD_NAME).write_text(record, encoding="utf-8")
    backup = work / "previous"
    os.rename(node_dir, backup)
    try:
        os.rename(staged, node_dir)
    except OSError:
        os.rename(backup, node_dir)
        raise
    shutil.rmtree(work, ignore_errors=True)


@click.command(name="update", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("node_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--dry-run", is_flag=True, help="report what would change, write nothing")
@click.option(
    "--conflicts",
    type=click.Choice(["stop", "inline"]),
    default="stop",
    show_default=True,
    help="stop: change nothing and report the hunks; inline: write <<<<<<< markers into the files",
)
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable result")
@click.option("--template-dir", type=click.Path(path_type=Path), hidden=True)
def update_command(
    node_dir: Path, dry_run: bool, conflicts: str, as_json: bool, template_dir: Path | None
) -> None:
    """Re-render NODE_DIR on the current templates, keeping hand edits (3-way merge)."""
    try:
        result = update_node(node_dir, template_dir, dry_run, inline=conflicts == "inline")
    except ModelOnexError as err:
        click.echo(f"omninode-generate update: error: {err.message}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(
            f"{result.node_dir}: template {result.old_template_version} -> {result.new_template_version}"
        )
        for rel, action in sorted(result.actions.items()):
            if action != "unchanged":
                click.echo(f"  {action:<32} {rel}")
        for rel, why in sorted(result.conflicts.items()):
            click.echo(f"  CONFLICT {rel}: {why}")
        for rel, hunks in sorted(result.inline.items()):
            click.echo(f"  markers in {rel}:\n{hunks}")
    if result.inline and not result.conflicts:
        click.echo(
            f"{len(result.inline)} file(s) have conflict markers: resolve them, then run update again",
            err=True,
        )
    if result.conflicts:
        click.echo(f"update stopped: {len(result.conflicts)} conflict(s); no file was changed", err=True)
        sys.exit(1)
