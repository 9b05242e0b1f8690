"""The nine timed stages of ``omninode-generate``.

Stages run in dependency order — the tests (stage 9) are rendered before the
validation gate (stage 6) so the gate can run them, and refinement (stage 7)
formats the code before it is validated — and are reported in their numbered
order with their timings.
"""

from __future__ import annotations

import difflib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omninode_bridge.codegen.contract_builder import build_contract, contract_hash
from omninode_bridge.codegen.contract_compat import read_contract
from omninode_bridge.codegen.events import publish_generation_event
from omninode_bridge.codegen.fidelity import fidelity_summary
from omninode_bridge.codegen.intelligence import apply_intelligence
from omninode_bridge.codegen.lexicon import BACKENDS
from omninode_bridge.codegen.operations import INPUT_CHECK_SUFFIX, operation_specs
from omninode_bridge.codegen.prompt import DEFAULT_VERBS, check_name, parse_prompt, snake
from omninode_bridge.codegen.prompt_text import bad_input, step_timeout_seconds
from omninode_bridge.codegen.refine import host_style, refine, style_record
from omninode_bridge.codegen.render import Renderer, adapter_plan, backend_families, build_context, node_paths
from omninode_bridge.codegen.spec import NodeAnswers
from omninode_bridge.codegen.validate import ValidationReport, validate
from omninode_bridge.codegen.writer import (
    RECORD_NAME,
    Staging,
    check_writable,
    exists_error,
    make_record,
    user_files,
)

OPERATION_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
STAGES = {
    1: "prompt parsing",
    2: "intelligence",
    3: "contract building",
    4: "code generation",
    5: "event-bus integration",
    6: "validation",
    7: "refinement",
    8: "file writing",
    9: "test generation",
}


@dataclass
class GenerateOptions:
    """Everything the CLI can ask for."""

    description: str = ""
    node_type: str | None = None
    name: str | None = None
    output_dir: Path = Path(".")
    from_contract: Path | None = None
    enable_intelligence: bool = False
    dry_run: bool = False
    force: bool = False
    run_tests: bool = True
    template_dir: Path | None = None
    publish_event: bool = True
    operations: list[str] | None = None


@dataclass
class StageResult:
    number: int
    name: str
    duration_ms: float = 0.0
    status: str = "pending"
    detail: str = ""


@dataclass
class GenerationResult:
    """What happened; ``--json`` prints :meth:`to_dict`."""

    success: bool = False
    node_name: str = ""
    node_type: str = ""
    confidence: float | None = None
    notes: list[str] = field(default_factory=list)
    fidelity: str = ""
    method: str = "prompt"
    node_dir: str = ""
    files: list[str] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    quality: ValidationReport | None = None
    dry_run: bool = False
    diff: str = ""
    replaced: list[str] = field(default_factory=list)  # existing generated files --force replaces
    kept: list[str] = field(default_factory=list)  # the user's own files, never touched
    event: str = ""
    error: str = ""
    total_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = sorted(data["stages"], key=lambda s: s["number"])
        return data


Progress = Callable[[StageResult], None]


class _Timer:
    def __init__(self, result: GenerationResult, progress: Progress | None) -> None:
        self.result = result
        self.progress = progress

    @contextmanager
    def stage(self, number: int, detail: str = "") -> Iterator[StageResult]:
        stage = StageResult(number, STAGES[number], status="running", detail=detail)
        started = time.perf_counter()
        try:
            yield stage
        except BaseException:
            stage.status = "error"  # the exception itself is the report
            raise
        else:
            if stage.status == "running":
                stage.status = "ok"
        finally:
            stage.duration_ms = round((time.perf_counter() - started) * 1000.0, 2)
            self.result.stages.append(stage)
            if self.progress:
                self.progress(stage)


def answers_from_contract(path: Path) -> NodeAnswers:
    """Generator answers recovered from an ONEX contract, legacy forms included.

    The contract is normalised first (:mod:`.contract_compat`); each legacy form it had
    becomes one note. Its operation names and descriptions are kept as they are.
    """
    normalized = read_contract(path)
    contract = normalized.contract
    node_type = str(contract["node_type"])
    name = contract["name"]
    check_name(name, node_type)
    generation = contract.get("generation") or {}
    entity = str(generation.get("entity") or snake(name[4 : -len(node_type)]))
    ops = list(normalized.operations) or [f"{v}_{entity}" for v in DEFAULT_VERBS[node_type]]
    ops = [op if OPERATION_RE.match(op) else f"op_{op}"[:63] for op in ops]
    advanced = contract.get("advanced_features") or {}
    features = [
        f for f, key in (("retry", "retry_policy"), ("circuit_breaker", "circuit_breaker")) if key in advanced
    ]
    features += [f for f in normalized.features if f not in features]
    configuration = contract.get("configuration") or {}
    ttl = (configuration.get("default_ttl_seconds") or {}).get("default")
    if ttl:
        features.append("ttl")
    if "pool_max_size" in configuration:
        features.append("pooling")
    services = (contract.get("dependencies") or {}).get("services") or []
    backends = [str(s["name"]) for s in services if isinstance(s, dict) and "name" in s]
    backends = list(dict.fromkeys([BACKENDS.get(b.lower(), b) for b in backends] + normalized.backends))
    targets = contract.get("performance_targets") or {}
    version = contract["version"]
    answers: NodeAnswers = {
        "description": " ".join(str(contract["description"]).split()),
        "name": name,
        "node_type": node_type,
        "entity": entity,
        "domain": entity.split("_")[0],
        "operations": ops,
        "operation_descriptions": {k: v for k, v in normalized.operations.items() if v},
        "backends": backends,
        "features": list(dict.fromkeys(features)),
        "performance_targets": {
            "latency_ms_p95": float(targets.get("latency_ms_p95", 50.0)),
            "throughput_rps": float(targets.get("throughput_rps", 1000.0)),
        },
        "version": f"{version['major']}.{version['minor']}.{version['patch']}",
        "source": "contract",
        "notes": [f"contract: {w}" for w in normalized.warnings],
    }
    if normalized.steps:
        answers["described_steps"] = normalized.steps
    return answers


def _specs(answers: NodeAnswers) -> list[dict[str, Any]]:
    return operation_specs(
        answers["node_type"],
        answers["operations"],
        answers["entity"],
        answers.get("operation_descriptions"),
        answers["description"],
    )


def ensure_real_operation(answers: NodeAnswers) -> list[str]:
    """When every operation is a hand-edit point, add one the generator can write for real
    (an input check for compute, a per-group count for reducers), so the node runs."""
    node_type, entity = answers["node_type"], answers["entity"]
    if node_type not in ("compute", "reducer") or any(s["kind"] != "hand_edit" for s in _specs(answers)):
        return []
    extra = f"validate_{entity}{INPUT_CHECK_SUFFIX}" if node_type == "compute" else f"count_{entity}"
    answers["operations"] = [*answers["operations"], extra][:10]
    return [f"every described operation is a hand-edit point; added {extra}, which is generated for real"]


def fidelity_of(answers: NodeAnswers) -> str:
    """The quality report's fidelity line for ``answers``."""
    specs = _specs(answers)
    adapters, _ = adapter_plan(
        backend_families(answers["node_type"], {s["kind"] for s in specs}), answers["backends"]
    )
    return fidelity_summary(answers, specs, adapters)


def checked_operations(names: list[str]) -> list[str]:
    """Operation names given by the user, validated as ``snake_case`` identifiers."""
    ops = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    bad = [n for n in ops if not OPERATION_RE.match(n)]
    if bad or not ops:
        raise bad_input(f"invalid operation name(s) {bad or names}: use snake_case like get_user")
    return ops


def answers_from_prompt(opts: GenerateOptions) -> NodeAnswers:
    parsed = parse_prompt(opts.description, opts.node_type, opts.name)
    answers: NodeAnswers = {
        "description": parsed.description,
        "name": parsed.name,
        "node_type": parsed.node_type,
        "entity": parsed.entity,
        "domain": parsed.domain,
        "operations": parsed.operations,
        "backends": parsed.backends,
        "features": parsed.features,
        "performance_targets": parsed.performance_targets,
        "version": "1.0.0",
        "source": "prompt",
        "classification": {"confidence": parsed.confidence, "scores": parsed.type_scores},
        "notes": parsed.notes,
    }
    if (timeout := step_timeout_seconds(parsed.description)) is not None:
        answers["step_timeout_s"] = timeout
    return answers


def render_node(
    answers: NodeAnswers, renderer: Renderer, timer: _Timer | None = None
) -> tuple[dict[str, Any], dict[str, str], str]:
    """Stages 3, 4, 5 and 9: contract, then every file's content (unrefined)."""
    with _maybe(timer, 3):
        contract = build_contract(answers, renderer.template_version)
    ctx = build_context(answers, contract, renderer.template_version)
    with _maybe(timer, 4):
        files = renderer.render_code(ctx)
        package_init = renderer.render_package_init(ctx)
    with _maybe(timer, 5):
        files.update(renderer.render_events(ctx))
    with _maybe(timer, 9):
        files.update(renderer.render_tests(ctx))
    return contract, files, package_init


@contextmanager
def _maybe(timer: _Timer | None, number: int) -> Iterator[None]:
    if timer is None:
        yield
        return
    with timer.stage(number):
        yield


def _unified_diff(target: Path, files: dict[str, str]) -> str:
    chunks: list[str] = []
    for rel, text in sorted(files.items()):
        path = target / rel
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old != text:
            chunks.extend(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"a/{rel}" if old else "/dev/null",
                    tofile=f"b/{rel}",
                )
            )
    return "".join(chunks)


def generate(opts: GenerateOptions, progress: Progress | None = None) -> GenerationResult:
    """Run the pipeline. Raises ``ModelOnexError(INVALID_INPUT)`` for bad input."""
    started = time.perf_counter()
    result = GenerationResult(dry_run=opts.dry_run)
    timer = _Timer(result, progress)
    output_dir = opts.output_dir.resolve()
    check_writable(output_dir)
    renderer = Renderer(opts.template_dir)
    style = host_style(output_dir)
    with timer.stage(1) as stage:
        if opts.from_contract is not None:
            answers = answers_from_contract(opts.from_contract)
            result.method = "contract"
            result.notes = answers.pop("notes")
        else:
            if not opts.description.strip():
                raise bad_input("a DESCRIPTION or --from-contract FILE is required")
            answers = answers_from_prompt(opts)
            if opts.operations:
                answers["operations"] = checked_operations(opts.operations)
            result.confidence = answers["classification"]["confidence"]
            result.notes = answers.pop("notes")
        stage.detail = f"{answers['name']} ({answers['node_type']}"
        stage.detail += f", confidence {result.confidence:.2f})" if result.confidence is not None else ")"
    result.notes.extend(ensure_real_operation(answers))
    result.fidelity = fidelity_of(answers)
    result.node_name, result.node_type = answers["name"], answers["node_type"]
    with timer.stage(2) as stage:
        if opts.enable_intelligence:
            apply_intelligence(answers, output_dir)
            result.method += "+intelligence"
            stage.detail = (
                ", ".join(f"{n['name']} {n['score']}" for n in answers["intelligence"]["similar"])
                or "no similar nodes"
            )
        else:
            stage.status, stage.detail = "skipped", "use --enable-intelligence"
    package, vdir = node_paths(answers)
    target = output_dir / package / vdir
    if target.exists() and not (opts.force or opts.dry_run):
        raise exists_error(target)
    contract, files, package_init = render_node(answers, renderer, timer)
    staging = Staging(None if opts.dry_run else output_dir, package, vdir)
    try:
        staging.put(files, package_init)
        with timer.stage(7) as stage:
            refined = refine(staging.root, style)
            stage.detail = refined.detail or (
                f"{len(refined.changed_files)} file(s) reformatted to line length {style.line_length}"
                f" ({style.source})"
            )
        files = staging.read()
        with timer.stage(6) as stage:
            report = validate(
                staging.root, package, vdir, answers["name"], files, run_tests=opts.run_tests, style=style
            )
            result.quality = report
            stage.detail = f"score {report.score:.2f}" + (
                f", coverage {report.coverage:.0f}%" if report.coverage else ""
            )
            if not report.passed:
                stage.status = "failed"
        files[RECORD_NAME] = make_record(
            answers, renderer.template_version, contract_hash(contract), files, style_record(style)
        )
        (staging.node_dir / RECORD_NAME).write_text(files[RECORD_NAME], encoding="utf-8")
        result.files = sorted(files)
        result.node_dir = str(target)
        with timer.stage(8) as stage:
            if not report.passed:
                stage.status, stage.detail = "skipped", "quality gate failed: nothing written"
                result.error = "; ".join(report.reasons)
            elif opts.dry_run:
                result.diff = _unified_diff(target, files)
                if target.exists():
                    result.kept = user_files(target, set(files))
                    result.replaced = sorted(
                        str(p.relative_to(target))
                        for p in target.rglob("*")
                        if p.is_file()
                        and "__pycache__" not in p.parts
                        and str(p.relative_to(target)) not in result.kept
                    )
                stage.status, stage.detail = "skipped", "dry run: nothing written"
                result.success = True
            else:
                staging.commit(opts.force)
                stage.detail = f"{len(files)} files -> {target}"
                result.success = True
    finally:
        if result.success and not opts.dry_run:
            staging.created_output = False
        staging.discard()
    result.total_ms = round((time.perf_counter() - started) * 1000.0, 2)
    if opts.publish_event and not opts.dry_run:
        result.event = publish_generation_event(_event_summary(result, answers))
    return result


def _event_summary(result: GenerationResult, answers: NodeAnswers) -> dict[str, Any]:
    """The original ``NODE_GENERATION_COMPLETED`` fields (plus stage times) for this run."""
    intelligence = answers.get("intelligence") or {}
    quality = result.quality
    complexity = quality.checks.get("complexity") if quality else None
    package = node_paths(answers)[0] if answers.get("name") else ""
    return {
        "workflow_id": str(uuid.uuid4()),
        "total_duration_seconds": round(result.total_ms / 1000.0, 4),
        "generated_files": list(result.files),
        "node_type": result.node_type,
        "service_name": package.replace("_", "-"),
        "quality_score": quality.score if quality else None,
        "test_coverage": quality.coverage if quality else None,
        "complexity_score": complexity.score if complexity and not complexity.skipped else None,
        "patterns_applied": [f"template:node_{result.node_type}", *answers.get("features", [])],
        "intelligence_sources": [n["name"] for n in intelligence.get("similar", [])],
        "primary_model": None,
        "total_tokens": None,
        "total_cost_usd": None,
        "node_name": result.node_name,
        "method": result.method,
        "success": result.success,
        "stage_times_ms": {s.name: s.duration_ms for s in sorted(result.stages, key=lambda s: s.number)},
    }
