"""Stage 2 (optional, offline): reuse patterns of the most similar existing nodes.

Scans the target tree for ``contract.yaml`` files and ranks them by token
(Jaccard) similarity to the description. When the best match is close enough,
its operation verbs are reused for the new node's entity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from omninode_bridge.codegen.lexicon import STOPWORDS
from omninode_bridge.codegen.prompt_text import words
from omninode_bridge.codegen.spec import NodeAnswers
from omninode_bridge.core.contract import contract_operations

MAX_FILES = 500
REUSE_THRESHOLD = 0.25


def _tokens(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS and len(w) > 2}


def similar_nodes(root: Path, description: str, limit: int = 3) -> list[dict[str, Any]]:
    """Most similar node contracts under ``root``: name, path, score, operations."""
    if not root.is_dir():
        return []
    query = _tokens(description)
    found = []
    for path in sorted(root.rglob("contract.yaml"))[:MAX_FILES]:
        if any(part.endswith(".omninode-tmp") for part in path.parts):
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, dict) or "name" not in data:
            continue
        ops = contract_operations(data)
        theirs = _tokens(f"{data.get('description', '')} {' '.join(ops)}")
        union = query | theirs
        score = round(len(query & theirs) / len(union), 3) if union else 0.0
        found.append({"name": data["name"], "path": str(path.parent), "score": score, "operations": ops})
    found.sort(key=lambda n: (-n["score"], n["name"]))
    return found[:limit]


def apply_intelligence(answers: NodeAnswers, root: Path) -> NodeAnswers:
    """Add similar nodes to ``answers``; reuse the best match's operation verbs when close."""
    similar = similar_nodes(root, answers["description"])
    info: dict[str, Any] = {"similar": [{k: n[k] for k in ("name", "score")} for n in similar], "reused": []}
    if similar and similar[0]["score"] >= REUSE_THRESHOLD:
        entity = answers["entity"]
        verbs = [op.split("_")[0] for op in similar[0]["operations"]]
        reused = [
            f"{v}_{entity}" for v in dict.fromkeys(verbs) if f"{v}_{entity}" not in answers["operations"]
        ]
        answers["operations"] = [*answers["operations"], *reused][:10]
        info["reused"] = reused
    answers["intelligence"] = info
    return answers
