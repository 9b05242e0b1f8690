"""What the generator can honestly write, and what it leaves to the user.

Every operation kind has a real implementation in the templates, but a kind only
*is* the described operation when the description asks for what it does:
"count, sum, min, max and mean" is the statistics kind; "VAT with banker's
rounding" or "a fraud risk score" is not, and pretending otherwise (a tax handler
returning the mean of ``values``) is worse than saying so. Such an operation
becomes a *hand-edit point*: typed request fields taken from the description's
nouns, a handler that raises ``NotImplementedError`` naming the work, and a test
marked ``xfail(strict=True)`` that turns red once the work is done.
"""

from __future__ import annotations

import re
from typing import Any

from omninode_bridge.codegen.lexicon import STOPWORDS
from omninode_bridge.codegen.spec import NodeAnswers

# Words that say a kind's generic implementation is what was asked for.
REAL_CUES: dict[tuple[str, str], frozenset[str]] = {
    ("compute", "statistics"): frozenset(
        {"count", "sum", "mean", "average", "avg", "min", "max", "minimum", "maximum", "statistics", "stats"}
    ),
    ("compute", "transform"): frozenset({"snake_case", "snake", "keys", "strip", "whitespace"}),
    ("compute", "validate"): frozenset({"required", "missing", "mandatory", "present", "empty"}),
    ("reducer", "aggregate"): frozenset(
        {
            "sum",
            "sums",
            "total",
            "totals",
            "aggregate",
            "aggregates",
            "accumulate",
            "rollup",
            "min",
            "max",
            "mean",
            "average",
            "minimum",
            "maximum",
        }
    ),
}
# Words that name a computation the generic kind does not do, even next to a cue.
FOREIGN_CUES: dict[str, frozenset[str]] = {
    "compute": frozenset({"tax", "vat", "rounding", "risk", "fraud", "price", "pricing", "cost", "html"}),
    "reducer": frozenset({"ohlc", "candle", "candles", "median", "percentile", "p95", "p99", "deduplicate"}),
}
NUMERIC_NOUNS = frozenset(
    {
        "amount",
        "weight",
        "price",
        "cost",
        "rate",
        "total",
        "quantity",
        "count",
        "velocity",
        "score",
        "distance",
        "value",
        "tax",
        "vat",
        "fee",
        "balance",
        "latency",
        "duration",
        "size",
        "age",
        "percent",
        "percentage",
        "income",
        "salary",
    }
)
LIST_NOUNS = frozenset({"items", "lines", "entries", "records", "events", "rows", "values"})
RESERVED_FIELDS = frozenset(
    {"operation", "correlation_id", "data", "values", "required_fields", "items", "group_by", "value_field"}
)
_WORD = re.compile(r"[a-z][a-z0-9_]*")
_INPUT_MARKERS = re.compile(r"\b(?:using|from|given|based on|out of|for)\b", re.IGNORECASE)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower().replace("-", "_")))


def hand_edit_work(node_type: str, kind: str, description: str) -> str | None:
    """Why ``kind`` is not the described operation (None: the generic code is the real thing)."""
    cues = REAL_CUES.get((node_type, kind))
    if cues is None:
        return None
    words = _words(description)
    foreign = words & FOREIGN_CUES.get(node_type, frozenset())
    if words & cues and not foreign:
        return None
    return " ".join(description.split())


def input_fields(description: str, limit: int = 6) -> list[dict[str, str]]:
    """Typed request fields from the nouns a description computes *from* ("using amount,
    country and velocity" -> amount: float, country: str, velocity: float)."""
    markers = list(_INPUT_MARKERS.finditer(description))
    preferred = [m for m in markers if m.group(0).lower() != "for"] or markers
    if not preferred:
        return []
    tail = description[preferred[-1].end() :]
    tail = re.split(r"[.;:()]|\bwith\b|\bthen\b", tail, maxsplit=1)[0]
    fields: list[dict[str, str]] = []
    for chunk in re.split(r",|\band\b|\bor\b", tail):
        words = [w for w in _WORD.findall(chunk.lower()) if w not in STOPWORDS and len(w) > 1]
        if not words:
            continue
        name = "_".join(words[-3:])
        if name in RESERVED_FIELDS or any(f["name"] == name for f in fields):
            continue
        last = words[-1]
        if last in LIST_NOUNS:
            py_type = "list[dict[str, Any]]"
        elif last in NUMERIC_NOUNS or last.rstrip("s") in NUMERIC_NOUNS:
            py_type = "float"
        else:
            py_type = "str"
        fields.append({"name": name, "type": py_type})
    return fields[:limit]


def output_field(entity: str) -> dict[str, str]:
    """The result field a hand-edit operation should return (the node's subject)."""
    last = entity.split("_")[-1]
    return {"name": entity, "type": "float" if last in NUMERIC_NOUNS else "Any"}


def fidelity_summary(answers: NodeAnswers, specs: list[dict[str, Any]], adapters: dict[str, str]) -> str:
    """One line: described operations, backends and features, which are real and which are left to you."""
    real = [s["name"] for s in specs if s["kind"] != "hand_edit"]
    hand = [s["name"] for s in specs if s["kind"] == "hand_edit"]
    served = set(adapters.values())
    backends = answers.get("backends", [])
    implemented_features = {
        "ttl",
        "retry",
        "metrics",
        "health",
        "cleanup",
        "circuit_breaker",
        "pooling",
        "compensation",
        "step_timeout",
    }
    features = answers.get("features", [])
    parts = [
        f"operations {len(real)}/{len(specs)} implemented"
        + (f", hand-edit: {', '.join(hand)}" if hand else ""),
    ]
    if answers.get("node_type") == "orchestrator":
        parts.append("step work: hand-edit point steps.py")
    if answers.get("node_type") == "effect" and backends:
        missing = [b for b in backends if b not in served]
        parts.append(
            f"backends with a real adapter: {', '.join(b for b in backends if b in served) or 'none'}"
            + (f"; without: {', '.join(missing)}" if missing else "")
        )
    if features:
        absent = [f for f in features if f not in implemented_features]
        parts.append(
            f"features {len(features) - len(absent)}/{len(features)}"
            + (f", not generated: {', '.join(absent)}" if absent else "")
        )
    return "; ".join(parts)


_STEP_STOP = re.compile(
    r"\b(?:compensat\w*|timeout|roll(?:s)?[ -]?back|rollback|if|retr(?:y|ies))\b", re.IGNORECASE
)


def described_steps(description: str, limit: int = 12) -> list[str]:
    """The steps a workflow description lists ("create the account, send a welcome email,
    then provision a workspace" -> three steps), in order."""
    text = description.split(":", 1)[1] if ":" in description else description
    steps: list[str] = []
    for chunk in re.split(r"[,;.]|\bthen\b|\band then\b", text):
        words = chunk.strip().split()
        if words and words[0].lower() in ("and", "finally", "first", "next"):
            words = words[1:]
        phrase = " ".join(words)
        if not phrase or _STEP_STOP.search(phrase) or len(words) > 8:
            continue
        steps.append(phrase)
    return steps[:limit]


_PAIRED = re.compile(
    r"increment\w*\s+(?:on|when|for)\s+(?:an?\s+|each\s+|every\s+)?([a-z][a-z_-]*)"
    r".*?decrement\w*\s+(?:on|when|for)\s+(?:an?\s+|each\s+|every\s+)?([a-z][a-z_-]*)",
    re.IGNORECASE | re.DOTALL,
)
_WINDOW = re.compile(
    r"(?:(\d+)[\s-]*(second|sec|s|minute|min|m|hour|h)s?\b[\s-]*(?:tumbling\s+)?windows?"
    r"|per\s+(second|minute|hour|day)\b)",
    re.IGNORECASE,
)
_UNIT_SECONDS = {
    "second": 1,
    "sec": 1,
    "s": 1,
    "minute": 60,
    "min": 60,
    "m": 60,
    "hour": 3600,
    "h": 3600,
    "day": 86400,
}


def paired_events(description: str) -> dict[str, str] | None:
    """ "increment on connect, decrement on disconnect" -> {"up": "connect", "down": "disconnect"}."""
    m = _PAIRED.search(description)
    return {"up": m.group(1).lower(), "down": m.group(2).lower()} if m else None


def window_seconds(description: str) -> int | None:
    """ "5 minute tumbling windows" -> 300, "per minute" -> 60 (None: no time window)."""
    m = _WINDOW.search(description)
    if m is None:
        return None
    if m.group(3):
        return _UNIT_SECONDS[m.group(3).lower()]
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
