"""Acceptance: generated code is formatted to the host repository's ruff settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from omninode_bridge.codegen.pipeline import GenerateOptions, generate
from omninode_bridge.codegen.refine import ruff_executable


@pytest.mark.parametrize("length", [88, 120])
def test_output_passes_the_hosts_ruff_format_check(tmp_path: Path, length: int) -> None:
    ruff = ruff_executable()
    assert ruff is not None
    (tmp_path / "pyproject.toml").write_text(f"[tool.ruff]\nline-length = {length}\n", encoding="utf-8")
    out = tmp_path / "src" / "nodes"
    result = generate(
        GenerateOptions(
            description="Store customer invoices in PostgreSQL with retries",
            output_dir=out,
            run_tests=False,
            publish_event=False,
        )
    )
    assert result.success, result.error
    refine = next(s for s in result.stages if s.number == 7)
    assert f"line length {length}" in refine.detail and "pyproject.toml" in refine.detail
    # The host's own ruff run (its pyproject found by discovery, no flags) agrees.
    proc = subprocess.run([ruff, "format", "--check", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
