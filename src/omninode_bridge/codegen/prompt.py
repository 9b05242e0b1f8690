"""Stage 1: deterministic parsing of a plain-text node description.

No model, no network: keyword lexicons and a few regular expressions turn the
description into a :class:`ParsedPrompt` (name, node type with a confidence,
domain, operations, backends, features, performance targets). The same text
always gives the same result.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from omninode_bridge.codegen.lexicon import (
    BACKENDS,
    CRUD_VERBS,
    FEATURES,
    STOPWORDS,
    TECH_WORDS,
    TYPE_KEYWORDS,
    VERBS,
)
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError

NODE_TYPES = ("effect", "compute", "reducer", "orchestrator")
SUFFIX = {t: t.capitalize() for t in NODE_TYPES}
NAME_RE = re.compile(r"^Node[A-Z][A-Za-z0-9]*(Effect|Compute|Reducer|Orchestrator)$")

_WORD = re.compile(r"[a-z][a-z0-9-]*")
_LATENCY = re.compile(r"(?:under|below|within|<|<=|less than)?\s*(\d+(?:\.\d+)?)\s*ms\b")
_THROUGHPUT = re.compile(
    r"(\d+(?:\.\d+)?)\s*(k)?\s*(?:rps|req/s|requests?/s|requests? per second|ops/s|"
    r"operations? per second|ops per second|per second|messages? per second|events? per second)"
)


@dataclass
class ParsedPrompt:
    """What stage 1 understood; becomes the generator's answers."""

    description: str
    name: str
    node_type: str
    confidence: float
    type_scores: dict[str, int]
    domain: str
    entity: str
    operations: list[str]
    backends: list[str]
    features: list[str]
    performance_targets: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bad_input(message: str) -> ModelOnexError:
    """The error raised for input the user must fix (the CLI exits 2 on it)."""
    return ModelOnexError(message, EnumCoreErrorCode.INVALID_INPUT)


def words(text: str) -> list[str]:
    """Lower-case word tokens of ``text``."""
    return _WORD.findall(text.lower())


def singular(word: str) -> str:
    """A cheap English singular good enough for identifiers."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def camel(snake: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_\-]+", snake) if part)


def snake(camel_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", camel_name).lower()


def classify(tokens: list[str]) -> tuple[str, float, dict[str, int]]:
    """Node kind with a confidence in [0, 1] from keyword votes (ties favour effect)."""
    scores = {t: sum(TYPE_KEYWORDS[t].get(w, 0) for w in tokens) for t in NODE_TYPES}
    total = sum(scores.values())
    if total == 0:
        return "effect", 0.0, scores
    best = max(NODE_TYPES, key=lambda t: (scores[t], -NODE_TYPES.index(t)))
    return best, round(scores[best] / total, 3), scores


def _is_entity_word(w: str) -> bool:
    if w in STOPWORDS or w in TECH_WORDS or w in VERBS or singular(w) in VERBS:
        return False
    if w in TYPE_KEYWORDS["reducer"] or w in TYPE_KEYWORDS["compute"]:
        return False
    return len(w) >= 3 and w.isalpha() and w not in TYPE_KEYWORDS["orchestrator"]


def _entity_words(tokens: list[str]) -> list[str]:
    """The first content noun, plus the next token when it is a content word too."""
    for i, w in enumerate(tokens):
        if _is_entity_word(w):
            picked = [singular(w)]
            if i + 1 < len(tokens) and _is_entity_word(tokens[i + 1]):
                picked.append(singular(tokens[i + 1]))
            return picked
    return []


def _operations(tokens: list[str], entity: str, node_type: str) -> list[str]:
    verbs: list[str] = []
    if "crud" in tokens:
        verbs.extend(CRUD_VERBS)
    for w in tokens:
        verb = VERBS.get(w)
        if verb and verb not in verbs:
            verbs.append(verb)
    if not verbs:
        verbs = list(DEFAULT_VERBS[node_type])
    ops = [f"{v}_{entity}s" if v == "list" else f"{v}_{entity}" for v in verbs]
    extras = {
        "orchestrator": [f"get_{entity}_status", f"cancel_{entity}"],
        "reducer": [f"get_{entity}_state", f"reset_{entity}"],
    }.get(node_type, [])
    if node_type == "orchestrator" and not any(op.startswith("run_") for op in ops):
        ops.insert(0, f"run_{entity}")
    ops = _ordered_unique([*ops[:6], *extras])
    return ops


DEFAULT_VERBS: dict[str, tuple[str, ...]] = {
    "effect": ("get", "put", "delete", "list"),
    "compute": ("compute",),
    "reducer": ("aggregate", "count"),
    "orchestrator": ("run",),
}


def _performance(text: str, node_type: str) -> dict[str, float]:
    targets: dict[str, float] = {
        "effect": {"latency_ms_p95": 50.0, "throughput_rps": 1000.0},
        "compute": {"latency_ms_p95": 5.0, "throughput_rps": 5000.0},
        "reducer": {"latency_ms_p95": 20.0, "throughput_rps": 2000.0},
        "orchestrator": {"latency_ms_p95": 200.0, "throughput_rps": 100.0},
    }[node_type].copy()
    if m := _LATENCY.search(text):
        targets["latency_ms_p95"] = float(m.group(1))
    if m := _THROUGHPUT.search(text):
        targets["throughput_rps"] = float(m.group(1)) * (1000 if m.group(2) else 1)
    return targets


def _ordered_unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def check_name(name: str, node_type: str | None) -> str:
    """Validate an explicit ``--name``; return the node type its suffix implies."""
    m = NAME_RE.match(name)
    if not m or name in {f"Node{s}" for s in SUFFIX.values()}:
        raise bad_input(
            f"invalid --name {name!r}: expected Node<Name><Effect|Compute|Reducer|Orchestrator>"
            ", e.g. NodeUserProfileEffect"
        )
    implied = m.group(1).lower()
    if node_type and node_type != implied:
        raise bad_input(f"--node-type {node_type} contradicts the name {name!r} (suffix {m.group(1)})")
    return implied


def parse_prompt(description: str, node_type: str | None = None, name: str | None = None) -> ParsedPrompt:
    """Parse ``description``; ``node_type``/``name`` override what the text implies."""
    text = " ".join(description.split())
    tokens = words(text)
    if len(text) < 10 or len(tokens) < 2:
        raise bad_input("description is empty or too short: describe the node in a sentence (>= 10 chars)")
    if node_type is not None and node_type not in NODE_TYPES:
        raise bad_input(f"--node-type must be one of {', '.join(NODE_TYPES)}, got {node_type!r}")
    implied = check_name(name, node_type) if name else None
    guessed, confidence, scores = classify(tokens)
    signals = sum(scores.values()) + sum(1 for w in tokens if w in VERBS or w in BACKENDS)
    if signals == 0:
        raise bad_input(
            "description is not meaningful: name what the node does (e.g. 'store user profiles in PostgreSQL')"
        )
    chosen = node_type or implied or guessed
    notes: list[str] = []
    if chosen != guessed:
        notes.append(f"node type {chosen} given explicitly; the description suggests {guessed}")
    entity_words = _entity_words(tokens) or ["item"]
    final_name = name or f"Node{camel('_'.join(entity_words))}{SUFFIX[chosen]}"
    entity = snake(final_name[4 : -len(SUFFIX[chosen])])
    domain = next((BACKENDS[w] for w in tokens if w in BACKENDS), entity_words[0])
    if chosen != guessed:
        confidence = round(scores[chosen] / max(1, sum(scores.values())), 3)
    return ParsedPrompt(
        description=text,
        name=final_name,
        node_type=chosen,
        confidence=confidence,
        type_scores=scores,
        domain=domain,
        entity=entity,
        operations=_operations(tokens, entity, chosen),
        backends=_ordered_unique([BACKENDS[w] for w in tokens if w in BACKENDS]),
        features=_ordered_unique([FEATURES[w] for w in tokens if w in FEATURES]),
        performance_targets=_performance(text.lower(), chosen),
        notes=notes,
    )
