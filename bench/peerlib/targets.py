"""Issue 10's targets, judged from a peers.json document (rows: metric, measured, target, met)."""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, bool | None]


def _get(doc: dict[str, Any], system: str, metric: str) -> float | None:
    value = doc["systems"].get(system, {}).get(metric)
    return float(value) if value is not None else None


def _at_least(name: str, ours: float | None, need: float | None, target: str, unit: str = "") -> Row:
    if ours is None or need is None:
        return (name, "-", target, None)
    return (name, f"{ours:,.2f}{unit} (need {need:,.2f}{unit})", target, ours >= need)


def _at_most(name: str, ours: float | None, limit: float | None, target: str, unit: str = "") -> Row:
    if ours is None or limit is None:
        return (name, "-", target, None)
    return (name, f"{ours:,.2f}{unit} (limit {limit:,.2f}{unit})", target, ours <= limit)


def _scaled(value: float | None, factor: float) -> float | None:
    return value * factor if value is not None else None


def targets(doc: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [
        _at_least("c32 pairs/s vs redis_py", _get(doc, "omninode", "c32_pairs_s"),
                  _get(doc, "redis_py", "c32_pairs_s"), ">= redis_py"),
        _at_most("c1 acquire p95", _get(doc, "omninode", "c1_p95_ms"),
                 _scaled(_get(doc, "raw_upsert", "c1_p95_ms"), 1.25), "<= 1.25 x floor p95", " ms"),
    ]  # fmt: skip
    for level in (1, 8, 32):
        rows.append(
            _at_least(f"c{level} pairs/s vs floor/2", _get(doc, "omninode", f"c{level}_pairs_s"),
                      _scaled(_get(doc, "raw_upsert", f"c{level}_pairs_s"), 0.9), ">= 0.9 x floor/2")
        )  # fmt: skip
    rows += [
        _at_most("hand-off p99", _get(doc, "omninode", "handoff_p99_ms"), 2.0, "<= 2 ms", " ms"),
        _at_least("contended grants/s", _get(doc, "omninode", "contended_grants_s"),
                  _scaled(_get(doc, "pg_advisory_xact", "contended_grants_s"), 0.95), ">= 0.95 x pg_advisory_xact"),
        _at_least("Jain (8 x 5 ms holds)", _get(doc, "omninode", "jain"), 0.99, ">= 0.99"),
    ]  # fmt: skip
    s = doc["scale"]
    held = s.get("held_sizes")
    ratio = s["p95_ms_1m"] / s["p95_ms_1k"] if held and s["p95_ms_1k"] else None
    q = s.get("waiters") or {"waiters": 10_000, "pool": "?"}
    connections = s["waiters_10k_connections"]
    rows += [
        _at_least("cleanup leases/s", s["cleanup_per_s"], 100_000.0, ">= 100k/s"),
        _at_most(f"acquire p95 {held[-1]:,} / {held[0]:,} held" if held else "acquire p95 1M / 1k held",
                 ratio, 1.5, "<= 1.5 x"),
        _at_most(f"{q['waiters']:,} waiters: connections", float(connections) if connections is not None else None,
                 2.0, f"<= 2 (pool {q['pool']} + LISTEN here)"),
        _at_least(f"{q['waiters']:,} waiters: hand-offs/s", s["waiters_10k_handoffs_s"], 150.0, ">= 150"),
    ]  # fmt: skip
    return rows


def markdown(doc: dict[str, Any]) -> list[str]:
    lines = ["Issue 10's targets for `omninode` (this run):", "", "| target | measured | wanted | met |",
             "|---|---|---|---|"]  # fmt: skip
    for name, measured, wanted, met in targets(doc):
        verdict = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {measured} | {wanted} | {verdict} |")
    return lines
