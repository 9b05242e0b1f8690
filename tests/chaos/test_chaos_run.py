"""A short chaos run in the suite: the same harness as ``make chaos`` with a small budget
and the faults that are quick and reliable on a shared CI machine (the network faults,
which need root and iproute2, run in the full ``make chaos``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chaos.cluster import cluster_missing
from chaos.run import Budget, run_once

SHORT_FAULTS = frozenset(
    ("conn_kill", "listen_kill", "pg_restart_fast", "pg_restart_immediate", "sigstop",
     "service_kill", "relay_kill", "clock_skew")
)  # fmt: skip

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def short_run() -> dict[str, object]:
    missing = cluster_missing()
    if missing is not None:
        pytest.skip(missing)
    budget = Budget(
        seconds=25, min_operations=0, lib_clients=5, http_clients=3, faults=SHORT_FAULTS, gap=(0.8, 1.8)
    )
    if os.environ.get("OMNINODE_CHAOS_SEED"):
        budget.seed = int(os.environ["OMNINODE_CHAOS_SEED"])
    keep = os.environ.get("OMNINODE_CHAOS_KEEP")  # a directory for the histories and logs
    return await run_once(budget, Path(keep) if keep else None)


async def test_a_short_chaos_run_finds_no_violation(short_run: dict[str, object]) -> None:
    checks = short_run["checks"]
    assert isinstance(checks, dict)
    assert short_run["violations"] == 0, (short_run["seed"], short_run["examples"])
    assert set(checks) == {
        "exclusive_overlap", "permits_exceeded", "stale_token_accepted", "lost_grant",
        "belief_past_expiry", "orphan_lease", "event_mismatch",
    }  # fmt: skip


async def test_every_fault_of_the_budget_happened_or_was_skipped_with_a_reason(
    short_run: dict[str, object],
) -> None:
    faults, skipped = short_run["faults"], short_run["skipped"]
    assert isinstance(faults, dict) and isinstance(skipped, dict)
    for kind in SHORT_FAULTS:
        assert faults.get(kind, 0) >= 1 or skipped.get(kind), (kind, short_run)
    assert all(isinstance(why, str) and why for why in skipped.values())


async def test_the_workload_did_real_work_under_the_faults(short_run: dict[str, object]) -> None:
    outcomes = short_run["outcomes"]
    assert isinstance(outcomes, dict)
    operations = short_run["operations"]
    assert isinstance(operations, int) and operations >= 100, short_run
    for needed in ("acquire:granted", "release:released", "extend:ok", "write:accepted"):
        assert outcomes.get(needed, 0) > 0, (needed, outcomes)
    assert short_run["outbox_events"], short_run


@pytest.fixture(scope="module")
async def bouncer_run() -> dict[str, object]:
    """The same short run with clients, service and relay behind PgBouncer (transaction
    pooling; statement cache off, LISTEN direct), judged by the same checker."""
    from bench.topology import find_pgbouncer

    missing = cluster_missing()
    if missing is not None:
        pytest.skip(missing)
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    budget = Budget(
        seconds=20,
        min_operations=0,
        lib_clients=5,
        http_clients=3,
        faults=SHORT_FAULTS - {"clock_skew"},
        gap=(0.8, 1.8),
        pgbouncer=True,
    )
    return await run_once(budget)


async def test_a_short_chaos_run_through_pgbouncer_finds_no_violation(bouncer_run: dict[str, object]) -> None:
    assert bouncer_run["topology"] == "pgbouncer (transaction pooling)"
    assert bouncer_run["violations"] == 0, (bouncer_run["seed"], bouncer_run["examples"])
    outcomes = bouncer_run["outcomes"]
    assert isinstance(outcomes, dict)
    for needed in ("acquire:granted", "release:released", "write:accepted"):
        assert outcomes.get(needed, 0) > 0, (needed, outcomes)
