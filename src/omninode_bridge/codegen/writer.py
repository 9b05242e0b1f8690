"""Stage 8: atomic file writing, and the node's generation record.

Files are first written to a staging folder *beside* the target (same file
system), validated there, then moved into place with ``rename``: all files or
none. An existing node is only replaced with ``force``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omninode_bridge import __version__
from omninode_bridge.codegen.render import MARKER
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError

RECORD_NAME = ".omninode-generate.json"
# The markers `update --conflicts inline` writes around a conflicting region.
CONFLICT_START = "<<<<<<< yours"
CONFLICT_END = ">>>>>>> template"


# A comment line saying a generated file is now wholly the user's: ``update`` keeps it as is.
HAND_OWNED = "omninode-generate: hand-owned"
HAND_OWNED_RE = re.compile(r"^[ \t]*(?:#|<!--)[ \t]*omninode-generate:[ \t]*hand-owned\b", re.MULTILINE)


def is_hand_owned(text: str | None) -> bool:
    """Whether ``text`` has a ``# omninode-generate: hand-owned`` (or ``<!-- ... -->``) line."""
    return text is not None and HAND_OWNED_RE.search(text) is not None


def has_markers(text: str | None) -> bool:
    """Whether ``text`` still holds an unresolved conflict written by ``--conflicts inline``."""
    return text is not None and any(
        line.startswith((CONFLICT_START, CONFLICT_END)) for line in text.splitlines()
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_record(
    answers: Mapping[str, Any],
    template_version: str,
    contract_sha: str,
    files: dict[str, str],
    style: Mapping[str, Any] | None = None,
) -> str:
    """The record file: what ``update`` needs to re-render and 3-way merge (no timestamps).

    ``style`` is the ruff style the files were refined with (line length and rules, no
    path), so ``update`` re-renders the same way wherever the folder has moved since.
    """
    record: dict[str, Any] = {
        "_marker": MARKER,
        "generator": "omninode-generate",
        "generator_version": __version__,
        "template_version": template_version,
        "answers": answers,
        "contract_sha256": contract_sha,
        "files": {rel: sha256(text) for rel, text in sorted(files.items())},
        "pristine": dict(sorted(files.items())),
    }
    if style is not None:
        record["style"] = dict(style)
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_record(node_dir: Path) -> dict[str, Any]:
    path = node_dir / RECORD_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelOnexError(
            f"{node_dir} has no {RECORD_NAME}: it was not made by omninode-generate",
            EnumCoreErrorCode.FILE_NOT_FOUND,
        ) from err
    except ValueError as err:
        raise ModelOnexError(f"{path} is not valid JSON: {err}", EnumCoreErrorCode.PARSING_ERROR) from err
    return data


def check_writable(output_dir: Path) -> None:
    """Raise ``INVALID_INPUT`` when ``output_dir`` cannot hold a new node."""
    probe = output_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ModelOnexError(
            f"output folder {output_dir} is not usable: {probe} is not a directory",
            EnumCoreErrorCode.INVALID_INPUT,
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ModelOnexError(f"output folder {output_dir} is not writable", EnumCoreErrorCode.INVALID_INPUT)
    try:  # permissions do not tell the whole story (root, read-only mounts, /proc): try it
        os.rmdir(tempfile.mkdtemp(prefix=".omninode-probe.", dir=probe))
    except OSError as err:
        raise ModelOnexError(
            f"output folder {output_dir} is not writable: {err.strerror}", EnumCoreErrorCode.INVALID_INPUT
        ) from err


class Staging:
    """A temporary folder beside the target holding ``<package>/<version>/...``."""

    def __init__(self, output_dir: Path | None, package: str, vdir: str) -> None:
        self.package = package
        self.vdir = vdir
        self.output_dir = output_dir
        self.created_output = False
        if output_dir is not None and not output_dir.exists():
            output_dir.mkdir(parents=True)
            self.created_output = True
        parent = str(output_dir) if output_dir is not None else None
        self.root = Path(tempfile.mkdtemp(prefix=f".{package}.", suffix=".omninode-tmp", dir=parent))

    @property
    def node_dir(self) -> Path:
        return self.root / self.package / self.vdir

    def put(self, files: dict[str, str], package_init: str) -> None:
        (self.root / self.package).mkdir(parents=True, exist_ok=True)
        (self.root / self.package / "__init__.py").write_text(package_init, encoding="utf-8")
        for rel, text in files.items():
            path = self.node_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    def read(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.node_dir)): p.read_text(encoding="utf-8")
            for p in sorted(self.node_dir.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }

    def commit(self, force: bool) -> Path:
        """Move the staged node into ``output_dir``; returns the node folder."""
        assert self.output_dir is not None
        package_dir = self.output_dir / self.package
        target = package_dir / self.vdir
        if not package_dir.exists():
            os.rename(self.root / self.package, package_dir)
            return target
        if target.exists() and not force:
            raise exists_error(target)
        old = self.root / "previous"
        if target.exists():
            for rel in user_files(target, set(self.read())):
                (self.node_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target / rel, self.node_dir / rel)  # the user's files survive --force
            os.rename(target, old)
        try:
            os.rename(self.node_dir, target)
        except OSError:
            if old.exists():
                os.rename(old, target)
            raise
        init = package_dir / "__init__.py"
        if not init.exists():
            os.rename(self.root / self.package / "__init__.py", init)
        return target

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self.created_output and self.output_dir is not None:
            with contextlib.suppress(OSError):
                self.output_dir.rmdir()


def user_files(node_dir: Path, new: set[str]) -> list[str]:
    """Files in ``node_dir`` that neither the last generation (its record) nor this one made."""
    try:
        previous = set(read_record(node_dir).get("files", {}))
    except ModelOnexError:
        previous = set()
    made = previous | new | {RECORD_NAME}
    return sorted(
        rel
        for p in node_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and (rel := str(p.relative_to(node_dir))) not in made
    )


def exists_error(target: Path) -> ModelOnexError:
    return ModelOnexError(
        f"{target} already exists; use --force to replace it or `omninode-generate update` to merge",
        EnumCoreErrorCode.FILE_WRITE_ERROR,
        path=str(target),
    )
