"""Acceptance: a built wheel holds everything the CLI reads at run time, and the CLI works from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from omninode_bridge.codegen.render import TEMPLATE_DIR

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "src" / "omninode_bridge"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of a clean copy of the project (the work tree gets no build/ or egg-info)."""
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    src = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "src" / "omninode_bridge", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel-dist")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        ".",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = out.glob("omninode_bridge-*.whl")
    return built


def test_wheel_contains_templates_meta_and_schemas(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"omninode_bridge/codegen/templates/{p.relative_to(TEMPLATE_DIR).as_posix()}"
        for p in TEMPLATE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {n for n in expected if "/models/" in n}, "templates/models missing from the source tree?"
    assert {n for n in expected if "/templates/tests/" in n}
    assert "omninode_bridge/codegen/templates/meta.json" in expected
    assert expected - names == set()
    assert {
        "omninode_bridge/core/schemas/onex_contract_v2.schema.json",
        "omninode_bridge/core/schemas/consul_service.schema.json",
        "omninode_bridge/codegen/hadolint.yaml",
        "omninode_bridge/py.typed",
    } <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("omninode-generate", "omninode-check"):
        assert script in scripts


def test_cli_generates_a_valid_node_from_the_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("OMNINODE_GENERATE_TEMPLATE_DIR", None)
    code = (
        "import sys, omninode_bridge; print(omninode_bridge.__file__, file=sys.stderr); "
        "from omninode_bridge.codegen.cli import main; main()"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "Store invoices in PostgreSQL",
            "--output-dir",
            str(out),
            "--no-test-gate",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[0].startswith(str(site)), "ran the work tree, not the wheel"
    node = out / "invoice_effect" / "v1_0_0"
    assert (node / "node.py").is_file() and (node / "tests" / "test_unit.py").is_file()
    check = subprocess.run(
        [sys.executable, "-c", "from omninode_bridge.codegen.check import main; main()", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert check.returncode == 0, check.stdout
