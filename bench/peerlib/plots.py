"""PNG plots of a peers.json document (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_all(doc: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from bench.peerlib.report import _all_rows

    rows = _all_rows(doc)
    paths = [_pairs(rows, out / "peers_pairs.png"), _contended(rows, out / "peers_contended.png")]
    if doc["scale"].get("held_sizes"):
        paths.append(_scale(doc["scale"], out / "peers_scale.png"))
    return paths


def _pairs(rows: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    shown = [(k, r) for k, r in rows if r.get("c1_pairs_s") is not None]
    levels = ("c1_pairs_s", "c8_pairs_s", "c32_pairs_s")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / 3
    for j, level in enumerate(levels):
        xs = [i + (j - 1) * width for i in range(len(shown))]
        ax.bar(
            xs,
            [r.get(level) or 0 for _, r in shown],
            width,
            label=level.split("_")[0].replace("c", "") + " clients",
        )
    ax.set_xticks(range(len(shown)), [k for k, _ in shown], rotation=30, ha="right")
    ax.set_ylabel("try-lock acquire + release pairs/s")
    ax.set_title("Uncontended pairs/s (medians of interleaved rounds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _contended(rows: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    shown = [(k, r) for k, r in rows if r.get("contended_grants_s") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [k for k, _ in shown]
    left.bar(names, [r["contended_grants_s"] for _, r in shown])
    left.axhline(200, color="k", linestyle="--", label="cap: 5 ms holds")
    left.set_ylabel("grants/s (8 contenders, 5 ms holds)")
    left.legend()
    xs = range(len(shown))
    right.bar([x - 0.2 for x in xs], [r.get("handoff_p50_ms") or 0 for _, r in shown], 0.4, label="p50")
    right.bar([x + 0.2 for x in xs], [r.get("handoff_p99_ms") or 0 for _, r in shown], 0.4, label="p99")
    right.set_yscale("log")
    right.set_ylabel("hand-off ms (log)")
    right.legend()
    for ax in (left, right):
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
    fig.suptitle("Contended: one lock, 8 contenders")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _scale(scale: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    sizes = scale["held_sizes"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [scale["held_p95"][str(n)] for n in sizes], marker="o")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("locks held")
    ax.set_ylabel("try-lock acquire p95 ms")
    ax.set_title("omninode: acquire p95 vs locks held")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
