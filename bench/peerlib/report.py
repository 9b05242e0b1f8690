"""peers.json (the issue's shape), CSV, markdown, PNG plots and the README section."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from bench.peerlib.targets import markdown as targets_markdown
from bench.peerlib.targets import targets

JSON_SYSTEMS = (
    "omninode", "omninode_sync", "omninode_http", "raw_upsert", "redis_py",
    "python_redis_lock", "pg_advisory", "pg_advisory_xact", "pals", "tooz_pg",
)  # fmt: skip
METRICS = (
    "c1_pairs_s", "c8_pairs_s", "c32_pairs_s", "c1_p95_ms",
    "handoff_p50_ms", "handoff_p99_ms", "contended_grants_s", "jain",
)  # fmt: skip
SCALE_KEYS = ("p95_ms_1k", "p95_ms_1m", "cleanup_per_s", "waiters_10k_connections", "waiters_10k_handoffs_s")
FACTS = ("durable", "fencing", "server_expiry")

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


def build(rows: dict[str, dict[str, Any]], scale: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """``rows`` by system key (variants included); returns the peers.json document."""
    systems: dict[str, Any] = {}
    for name in JSON_SYSTEMS:
        row = next((r for r in rows.values() if r.get("json_key") == name), None)
        if row is None:
            systems[name] = {**dict.fromkeys(METRICS), "reason": "not selected in this run"}
            continue
        entry = {m: row.get(m) for m in METRICS}
        entry.update({k: v for k, v in row.items() if k not in entry and k != "json_key"})
        if entry.get("reason"):  # absent or failed: no numbers that could be half-measured
            entry.update(dict.fromkeys(METRICS))
        systems[name] = entry
    variants = {
        k: {kk: vv for kk, vv in r.items() if kk != "json_key"}
        for k, r in rows.items()
        if not r.get("json_key")
    }
    doc: dict[str, Any] = {
        "systems": systems,
        "scale": scale_json(scale),
        "variants": variants,
        "machine": machine,
    }
    doc["targets"] = [
        dict(zip(("target", "measured", "wanted", "met"), row, strict=True)) for row in targets(doc)
    ]
    return doc


def scale_json(scale: dict[str, Any]) -> dict[str, Any]:
    """The issue's scale keys (None where a curve failed or was not run) and the details."""
    out: dict[str, Any] = {**dict.fromkeys(SCALE_KEYS), "reason": scale.get("reason")}
    errors = scale.get("errors") or {}
    if errors:
        out["reason"] = "; ".join(f"{k}: {v}" for k, v in errors.items())
    if scale.get("held_p95_ms"):
        held = {int(k): v for k, v in scale["held_p95_ms"].items()}
        sizes = sorted(held)
        out.update(
            p95_ms_1k=round(held[sizes[0]], 3),
            p95_ms_100k=round(held[sizes[len(sizes) // 2]], 3),
            p95_ms_1m=round(held[sizes[-1]], 3),
            held_sizes=sizes,
            held_p95={str(n): round(held[n], 3) for n in sizes},
        )
    if scale.get("cleanup_per_s"):
        cleanup = {int(k): v for k, v in scale["cleanup_per_s"].items()}
        csizes = sorted(cleanup)
        out.update(
            cleanup_per_s=round(cleanup[csizes[-1]], 1),
            cleanup_per_s_10k=round(cleanup[csizes[0]], 1),
            cleanup_sizes=csizes,
        )
    if scale.get("waiters"):
        queue = scale["waiters"]
        out.update(
            waiters_10k_connections=queue["connections"],
            waiters_10k_handoffs_s=queue["handoffs_s"],
            waiters=queue,
        )
    return out


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


ORDER = (
    "omninode", "omninode_sync", "omninode_http", "raw_upsert", "redis_py", "redis_py_1ms",
    "redis_py_sync", "redis_py_sync_1ms", "python_redis_lock", "pg_advisory", "pg_advisory_xact",
    "pals", "tooz_pg",
)  # fmt: skip


def _all_rows(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Systems and variants, in the bench's order (variants next to their system)."""
    rows = [*doc["systems"].items(), *doc["variants"].items()]
    return sorted(rows, key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER))


def markdown(doc: dict[str, Any]) -> str:
    m, lines = doc["machine"], []
    lines += [
        "### Lock systems side by side (`make bench`)",
        "",
        f"{m['mode']} run of `python -m bench.peers` at {m['commit']} on {m['date']}: {m['cpus']} CPUs "
        f"(load average {m['load_before']:.1f} before, {m['load_after']:.1f} after; the machine is shared, "
        f"so read ratios), PostgreSQL {m['postgres']} ({m['server']}), Redis {m.get('redis') or '-'}, "
        f"Python {m['python']}. Medians of {m['rounds']} interleaved rounds (round-robin over the systems "
        f"in each round), {m['slice_s']:g} s per cell.",
        "",
        "Uncontended try-lock, each client its own name: acquire + release pairs/s and acquire latency.",
        "",
        "| system | c1 pairs/s | c8 pairs/s | c32 pairs/s | c1 acquire p50 / p95 / p99 ms | c8 p95 ms | c32 p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in _all_rows(doc):
        if r.get("c1_pairs_s") is None and not r.get("reason"):
            continue  # contended-only variant
        lines.append(
            f"| {_label(key, r)} | {_num(r.get('c1_pairs_s'))} | {_num(r.get('c8_pairs_s'))} | "
            f"{_num(r.get('c32_pairs_s'))} | {_num(r.get('c1_p50_ms'), 2)} / {_num(r.get('c1_p95_ms'), 2)} / "
            f"{_num(r.get('c1_p99_ms'), 2)} | {_num(r.get('c8_p95_ms'), 2)} | {_num(r.get('c32_p95_ms'), 2)} |"
        )
    lines += [
        "",
        "Contended: 8 contenders block for one lock and hold it 5 ms (at most 200 grants/s). Hand-off = "
        "holder starts its release -> next holder granted, one process, monotonic clock.",
        "",
        "| system | grants/s | hand-off p50 / p99 ms | Jain | grants per client (all rounds) |",
        "|---|---:|---:|---:|---|",
    ]
    for key, r in _all_rows(doc):
        if r.get("contended_grants_s") is None:
            continue
        counts = r.get("grants_per_client") or []
        lines.append(
            f"| {_label(key, r)} | {_num(r['contended_grants_s'])} | {_num(r.get('handoff_p50_ms'), 2)} / "
            f"{_num(r.get('handoff_p99_ms'), 2)} | {_num(r.get('jain'), 3)} | {' '.join(map(str, counts))} |"
        )
    lines += [
        "",
        "What one grant guarantees:",
        "",
        "| system | durable | fencing token | server-clock expiry |",
        "|---|---|---|---|",
    ]
    for key, r in _all_rows(doc):
        if r.get("durable"):
            lines.append(f"| {_label(key, r)} | {r['durable']} | {r['fencing']} | {r['server_expiry']} |")
    lines += ["", *scale_markdown(doc["scale"]), "", *targets_markdown(doc)]
    absent = [(k, r["reason"]) for k, r in _all_rows(doc) if r.get("reason")]
    if absent:
        lines += ["", "Not measured:", ""] + [f"- `{k}`: {reason}" for k, reason in absent]
    notes = [(k, r["note"]) for k, r in _all_rows(doc) if r.get("note")]
    lines += ["", "How each system is called:", ""] + [f"- `{k}`: {note}" for k, note in notes]
    return "\n".join(lines) + "\n"


def _label(key: str, r: dict[str, Any]) -> str:
    return f"`{key}` {r.get('label', '')}".rstrip()


def scale_markdown(s: dict[str, Any]) -> list[str]:
    lines = ["Our engine at scale (async client, one client):", ""]
    if s.get("held_sizes"):
        held = " / ".join(f"{n:,}: {v:.2f} ms" for n, v in zip(s["held_sizes"], _held_values(s), strict=True))
        lines.append(f"- try-lock acquire p95 on fresh names with N locks held (N: p95): {held}")
    if s.get("cleanup_sizes"):
        lines.append(
            f"- cleanup of expired leases (the engine's `cleanup_expired`): "
            f"{s['cleanup_sizes'][0]:,}: {s['cleanup_per_s_10k']:,.0f} leases/s, "
            f"{s['cleanup_sizes'][-1]:,}: {s['cleanup_per_s']:,.0f} leases/s"
        )
    if q := s.get("waiters"):
        lines.append(
            f"- {q['waiters']:,} simultaneous waiters on one lock in one process (pool of {q['pool']}): "
            f"{q['connections']} database connections, {q['queued']:,} queued in {q['enqueue_s']:.1f} s"
            + (f" ({sum(q['errors'].values()):,} failed: {q['errors']})" if q["errors"] else "")
            + f", {q['granted']:,} granted, drained in {q['drain_s']:.1f} s = {q['handoffs_s']:,.0f} hand-offs/s"
        )
    if s.get("reason"):
        lines.append(f"- not measured: {s['reason']}")
    return lines


def _held_values(s: dict[str, Any]) -> list[float]:
    return [s["held_p95"][str(n)] for n in s["held_sizes"]]


def write_csv(doc: dict[str, Any], path: Path) -> None:
    columns = [
        "system", "label", *METRICS, "c1_p50_ms", "c1_p99_ms", "c8_p50_ms", "c8_p95_ms", "c8_p99_ms",
        "c32_p50_ms", "c32_p95_ms", "c32_p99_ms", "handoff_samples", *FACTS, "reason",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for key, r in _all_rows(doc):
            writer.writerow([key, *(r.get(c) for c in columns[1:])])


def write_all(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "peers.json", out / "peers.csv", out / "peers.md"]
    paths[0].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    write_csv(doc, paths[1])
    paths[2].write_text(markdown(doc), encoding="utf-8")
    from bench.peerlib.plots import plot_all

    return paths + plot_all(doc, out)


def update_readme(readme: Path, peers_md: Path) -> None:
    """Replace the README's text between the peers markers with peers.md."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{readme}: markers {BEGIN} ... {END} not found (in that order)")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = peers_md.read_text(encoding="utf-8").strip()
    note = (
        "<!-- generated from bench/results/peers.md by `python -m bench.peers --readme-only`; edit there -->"
    )
    readme.write_text(f"{head}{BEGIN}\n{note}\n\n{body}\n\n{END}{tail}", encoding="utf-8")
