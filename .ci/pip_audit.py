"""pip-audit of the installed environment that says plainly when it could not audit.

pip-audit asks a vulnerability service (PyPI's JSON API by default, or OSV). From a
machine that reaches package registries only through a mirror, that service may not
answer; pip-audit then reports every package as "not found" and still exits 0, which
would read as "no known vulnerabilities". So a canary goes first: a pinned package with
a published advisory. If the canary's advisory is not seen, the source is unreachable:
say so and exit 0 (nothing was audited; CI must not claim otherwise). If it is seen,
audit the environment and fail on any vulnerability.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CANARY = "requests==2.31.0"  # CVE-2024-35195 (GHSA-9wx4-h78v-vm56), fixed in 2.32.0
AUDIT = [
    sys.executable,
    "-m",
    "pip_audit",
    "--format",
    "json",
    "--progress-spinner",
    "off",
    "--timeout",
    "15",
]


def _audit(*args: str) -> dict[str, Any] | None:
    done = subprocess.run([*AUDIT, *args], capture_output=True, text=True, timeout=600, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit gave no report (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return report if isinstance(report, dict) else {"dependencies": report}


def _source_answers() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "canary.txt"
        requirements.write_text(CANARY + "\n")
        report = _audit("--no-deps", "--disable-pip", "-r", str(requirements))
    deps = (report or {}).get("dependencies") or []
    return any(d.get("vulns") for d in deps if isinstance(d, dict))


def main() -> int:
    if not _source_answers():
        print(
            "pip-audit: NOT RUN - its vulnerability source (PyPI's JSON API / OSV) does not answer from "
            f"this machine (the canary {CANARY}, which has a published advisory, came back clean); "
            "the installed packages were not audited"
        )
        return 0
    report = _audit("--local", "--skip-editable")
    if report is None:
        return 1
    deps = [d for d in report.get("dependencies", []) if isinstance(d, dict)]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    for dep in vulnerable:
        ids = ", ".join(v.get("id", "?") for v in dep["vulns"])
        print(f"pip-audit: {dep['name']} {dep.get('version')}: {ids}")
    print(f"pip-audit: {len(deps)} packages, {len(vulnerable)} vulnerable, {len(skipped)} not auditable")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
