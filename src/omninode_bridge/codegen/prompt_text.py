"""Stage 1 extractions that read the text itself: named backends, performance targets,
workflow features (compensation, per-step timeouts), and the refusal of text that is
not a node description. Deterministic regular expressions, no model."""

from __future__ import annotations

import re

from omninode_bridge.codegen.lexicon import BACKENDS, STOPWORDS
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError

_WORD = re.compile(r"[a-z][a-z0-9-]*")


def bad_input(message: str) -> ModelOnexError:
    """The error raised for input the user must fix (the CLI exits 2 on it)."""
    return ModelOnexError(message, EnumCoreErrorCode.INVALID_INPUT)


def words(text: str) -> list[str]:
    """Lower-case word tokens of ``text``."""
    return _WORD.findall(text.lower())


CLEANUP_RE = re.compile(
    r"\b(?:background|periodic|scheduled|automatic)\s+(?:cleanup|clean-up|sweep|sweeper|reaper)"
    r"|\bcleanup\s+(?:task|job|worker|loop)"
    r"|\b(?:automatic|lease|lock)\s+(?:lease\s+)?(?:expiration|expiry)"
    r"|\bexpired\s+(?:leases|locks|entries|keys)"
)

MAX_DESCRIPTION = 3000  # characters: a few paragraphs describe one node; more is not a description

MIN_FUNCTION_WORDS = 0.08  # English prose has ~40 % function words; word salad almost none

_LATENCY = re.compile(r"(?:under|below|within|<|<=|less than)?\s*(\d+(?:\.\d+)?)\s*ms\b")

_THROUGHPUT = re.compile(
    r"(\d+(?:\.\d+)?)\s*(k)?\s*(?:rps|req/s|requests?/s|requests? per second|ops/s|"
    r"operations? per second|ops per second|per second|messages? per second|events? per second)"
)


def performance_targets(text: str, node_type: str) -> dict[str, float]:
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


def refuse_non_descriptions(text: str) -> None:
    """Refuse text that cannot be a node description: too short, too long, or word salad."""
    if len(text) < 10 or len(words(text)) < 2:
        raise bad_input("description is empty or too short: describe the node in a sentence (>= 10 chars)")
    if len(text) > MAX_DESCRIPTION:
        raise bad_input(
            f"description is {len(text)} characters: describe one node in a few sentences"
            f" (at most {MAX_DESCRIPTION})"
        )
    plain = words(text)
    function_words = sum(1 for w in plain if w in STOPWORDS)
    if len(plain) >= 12 and function_words / len(plain) < MIN_FUNCTION_WORDS:
        raise bad_input(
            f"description does not read as sentences ({function_words} of {len(plain)} words are"
            " function words): describe what the node does, e.g. 'store user profiles in PostgreSQL'"
        )


def named_backends(tokens: list[str]) -> list[str]:
    """Backends named in ``tokens``; "email address" and "per email" name no mail server."""
    found: list[str] = []
    for i, w in enumerate(tokens):
        if w not in BACKENDS:
            continue
        if w in ("email", "emails"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            prev = tokens[i - 1] if i else ""
            if nxt.startswith("address") or prev in ("per", "by", "their", "his", "her"):
                continue
        found.append(BACKENDS[w])
    return list(dict.fromkeys(found))


_COMPENSATION = re.compile(r"\b(?:compensat\w*|roll(?:s|ing)?[ -]?back|rollback|undo)\b", re.IGNORECASE)
_STEP_TIMEOUT = re.compile(
    r"(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|minutes?)\s+timeout\s+(?:per|for each|on each)\s+step"
    r"|timeout\s+of\s+(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|minutes?)\s+(?:per|for each)\s+step",
    re.IGNORECASE,
)


def step_timeout_seconds(text: str) -> float | None:
    """ "30s timeout per step" -> 30.0 (None when the description names no per-step timeout)."""
    m = _STEP_TIMEOUT.search(text)
    if m is None:
        return None
    value, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    scale = 0.001 if unit.lower() == "ms" else 60.0 if unit.lower().startswith("m") else 1.0
    return float(value) * scale


def workflow_features(text: str, node_type: str) -> list[str]:
    if node_type != "orchestrator":
        return []
    found = ["compensation"] if _COMPENSATION.search(text) else []
    return [*found, "step_timeout"] if step_timeout_seconds(text) is not None else found
