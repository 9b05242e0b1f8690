"""`make bench`'s harness (bench/peers.py) with tiny sizes, so it does not rot.

Runs our async client, the floor and session advisory locks through every scenario and
the scale curves on the test database, then checks peers.json's shape (the issue's), the
numbers and the other outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import peers
from bench.peerlib import report

RUN = ("omninode", "raw_upsert", "pg_advisory")
PAIRS = ("c1_pairs_s", "c8_pairs_s", "c32_pairs_s", "c1_p95_ms")
CONTENDED = ("handoff_p50_ms", "handoff_p99_ms", "contended_grants_s", "jain")


@pytest.mark.integration
async def test_peers_harness_tiny_run(dsn: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots need the bench extra (pip install -e '.[bench]')")
    plan = peers.Plan(levels=(1, 8, 32), rounds=1, slice_s=0.15, warmup_s=0.05, contended_s=0.4)
    sizes = peers.Sizes(held=(10, 100, 1000), cleanup=(50, 500), waiters=40, p95_seconds=0.1)
    doc = await peers.run(
        peers.Options(dsn=dsn, systems=RUN, plan=plan, sizes=sizes, quick=True, out=tmp_path)
    )

    assert json.loads((tmp_path / "peers.json").read_text()) == json.loads(json.dumps(doc))
    assert set(doc["systems"]) == set(report.JSON_SYSTEMS)
    for name in RUN:
        entry = doc["systems"][name]
        assert entry["reason"] is None, entry["reason"]
        assert all(entry[m] > 0 for m in PAIRS), entry
    for name in ("omninode", "pg_advisory"):
        entry = doc["systems"][name]
        assert all(entry[m] > 0 for m in CONTENDED), entry
        assert entry["handoff_p50_ms"] <= entry["handoff_p99_ms"] and entry["jain"] <= 1
        assert len(entry["grants_per_client"]) == 8
    assert all(doc["systems"]["raw_upsert"][m] is None for m in CONTENDED)  # the floor has no queue
    for name in set(report.JSON_SYSTEMS) - set(RUN):
        entry = doc["systems"][name]
        assert all(entry[m] is None for m in report.METRICS) and entry["reason"], entry

    scale = doc["scale"]
    assert scale["reason"] is None
    assert all(scale[k] > 0 for k in report.SCALE_KEYS), scale
    queue = scale["waiters"]
    assert queue["waiters"] == queue["queued"] == queue["granted"] == 40 and not queue["errors"], queue
    assert 2 <= scale["waiters_10k_connections"] <= 2 + 1  # pool (min 1, max 2) + LISTEN

    met = {t["target"]: t["met"] for t in doc["targets"]}
    unjudged = {"c32 pairs/s vs redis_py", "contended grants/s"}  # their peers did not run here
    assert len(met) == 12 and all(met[t] is None for t in unjudged), met
    assert all(met[t] in (True, False) for t in set(met) - unjudged), met

    rows = (tmp_path / "peers.csv").read_text().splitlines()
    assert rows[0].startswith("system,label,c1_pairs_s") and len(rows) == 1 + len(report.JSON_SYSTEMS)
    table = (tmp_path / "peers.md").read_text()
    assert "| `omninode` " in table and "Not measured:" in table
    for png in ("peers_pairs.png", "peers_contended.png", "peers_scale.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


def test_readme_section_is_replaced_between_markers_only(tmp_path: Path) -> None:
    readme, peers_md = tmp_path / "README.md", tmp_path / "peers.md"
    readme.write_text(f"# x\n\n## Performance\nintro\n{report.BEGIN}\nold table\n{report.END}\nafter\n")
    peers_md.write_text("### new table\n| a |\n")
    report.update_readme(readme, peers_md)
    text = readme.read_text()
    assert text.startswith("# x\n\n## Performance\nintro\n") and text.endswith(f"{report.END}\nafter\n")
    assert "### new table\n| a |" in text and "old table" not in text
    report.update_readme(readme, peers_md)  # idempotent
    assert readme.read_text() == text
