"""Runs the peer scenarios over the systems in interleaved rounds and aggregates medians."""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.engine import jain, percentile
from bench.peerlib.base import System, Unavailable
from bench.peerlib.scenarios import Contended, Pairs, contended, pairs

Log = Callable[[str], None]
CONTENDERS = 8
HOLD_S = 0.005


@dataclass
class Plan:
    levels: tuple[int, ...] = (1, 8, 32)
    rounds: int = 3
    slice_s: float = 1.5
    warmup_s: float = 0.3
    contended_s: float = 3.0


@dataclass
class Outcome:
    system: System
    reason: str | None = None  # why it did not run (or stopped)
    pairs: dict[int, list[Pairs]] = field(default_factory=dict)
    contended: list[Contended] = field(default_factory=list)


async def start_all(systems: Sequence[System], log: Log) -> list[Outcome]:
    outcomes = []
    for s in systems:
        outcome = Outcome(s)
        try:
            await s.start()
        except Unavailable as err:
            outcome.reason = str(err)
        except Exception as err:
            outcome.reason = f"did not start: {type(err).__name__}: {err}"
        if outcome.reason:
            log(f"  {s.key}: skipped ({outcome.reason})")
        outcomes.append(outcome)
    return outcomes


async def _measure(outcome: Outcome, what: str, call: Callable[[System], Any], log: Log) -> Any:
    """Run one cell; a failure marks the system failed (reason kept), the run goes on."""
    try:
        return await call(outcome.system)
    except Exception as err:
        outcome.reason = f"failed during {what}: {type(err).__name__}: {err}"
        log(f"  {outcome.system.key}: {outcome.reason}")
        log("".join(traceback.format_exception(err, limit=-3)).rstrip())
        return None
    finally:
        try:
            await outcome.system.close()
        except Exception as err:
            log(f"  {outcome.system.key}: close failed: {err}")


def _rotated(items: Sequence[Outcome], r: int) -> list[Outcome]:
    k = r % len(items) if items else 0
    return [*items[k:], *items[:k]]


async def run_rounds(outcomes: Sequence[Outcome], plan: Plan, tag: str, log: Log) -> None:
    """Uncontended pairs then the contended scenario, round-robin over systems per round."""
    for r in range(plan.rounds):
        started = time.perf_counter()
        for level in plan.levels:
            for o in _rotated([o for o in outcomes if o.system.uncontended], r):
                if o.reason:
                    continue
                prefix = f"peers:{tag}:{o.system.key}:{level}"

                async def cell(s: System, level: int = level, prefix: str = prefix) -> Pairs:
                    sessions = await s.open(level, contended=False)
                    await pairs(sessions, s.is_sync, plan.warmup_s, prefix)
                    return await pairs(sessions, s.is_sync, plan.slice_s, prefix)

                got = await _measure(o, f"pairs at {level} clients", cell, log)
                if got is not None:
                    o.pairs.setdefault(level, []).append(got)
        for o in _rotated([o for o in outcomes if o.system.contended], r):
            if o.reason:
                continue
            name = f"peers:{tag}:contended:{o.system.key}:{r}"

            async def fight(s: System, name: str = name) -> Contended:
                sessions = await s.open(CONTENDERS, contended=True)
                return await contended(sessions, s.is_sync, plan.contended_s, HOLD_S, name)

            got = await _measure(o, "the contended scenario", fight, log)
            if got is not None:
                o.contended.append(got)
        log(f"  round {r + 1}/{plan.rounds} done in {time.perf_counter() - started:.0f} s")


def _median(values: list[float], digits: int = 3) -> float | None:
    return round(statistics.median(values), digits) if values else None


def summarize(o: Outcome, levels: Sequence[int]) -> dict[str, Any]:
    """One system's row: medians over rounds (rates, per-round percentiles)."""
    row: dict[str, Any] = {}
    for level in levels:
        runs = o.pairs.get(level, [])
        row[f"c{level}_pairs_s"] = _median([p.rate for p in runs])
        for q in (50, 95, 99):
            row[f"c{level}_p{q}_ms"] = _median([percentile(p.latencies, q) * 1000 for p in runs])
    runs_c = [c for c in o.contended if c.handoffs or sum(c.counts)]
    row["contended_grants_s"] = _median([c.rate for c in runs_c])
    row["handoff_p50_ms"] = _median([percentile(c.handoffs, 50) * 1000 for c in runs_c if c.handoffs])
    row["handoff_p99_ms"] = _median([percentile(c.handoffs, 99) * 1000 for c in runs_c if c.handoffs])
    row["jain"] = _median([jain(c.counts) for c in runs_c], 4)
    row["grants_per_client"] = [sum(col) for col in zip(*(c.counts for c in runs_c), strict=True)] or None
    row["handoff_samples"] = sum(len(c.handoffs) for c in runs_c)
    row["rounds"] = {"pairs": {str(k): len(v) for k, v in o.pairs.items()}, "contended": len(runs_c)}
    return row
