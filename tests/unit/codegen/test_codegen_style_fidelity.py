"""Host ruff settings, fidelity helpers and the answers command's parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omninode_bridge.codegen.answers import change_answers
from omninode_bridge.codegen.fidelity import (
    described_steps,
    hand_edit_work,
    input_fields,
    output_field,
    paired_events,
    window_seconds,
)
from omninode_bridge.codegen.refine import DEFAULT_LINE_LENGTH, RuffStyle, host_style
from omninode_bridge.codegen.writer import RECORD_NAME, make_record
from omninode_bridge.core import ModelOnexError


def test_host_style_reads_the_nearest_ruff_settings(tmp_path: Path) -> None:
    assert host_style(tmp_path / "none") == RuffStyle()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ruff]\nline-length = 120\n[tool.ruff.lint]\nselect = ["E", "F"]\nignore = ["E741"]\n'
    )
    nested = tmp_path / "src" / "nodes"
    nested.mkdir(parents=True)
    style = host_style(nested)
    assert (style.line_length, style.select, style.source) == (
        120,
        ("E", "F"),
        str(tmp_path / "pyproject.toml"),
    )
    assert "E741" in style.ignore and "RUF012" in style.ignore
    assert style.settings()[:3] == ["--isolated", "--line-length", "120"]
    (nested / "ruff.toml").write_text("line-length = 88\nextend-select = ['N']\n")
    closer = host_style(nested)
    assert closer.line_length == 88 and closer.select[-1] == "N"
    (nested / "ruff.toml").write_text("line-length = 'wide'\n")
    assert host_style(nested).line_length == DEFAULT_LINE_LENGTH
    (nested / "ruff.toml").write_text("not toml [")
    assert host_style(nested).line_length == 120  # unreadable: the next one up


@pytest.mark.parametrize(
    ("node_type", "kind", "text", "hand_edit"),
    [
        ("compute", "statistics", "Calculate count, sum and mean of readings", False),
        ("compute", "statistics", "VAT for invoice lines with banker's rounding", True),
        ("compute", "statistics", "Sum the tax of invoice lines", True),  # a cue, but a tax rule
        ("compute", "transform", "Normalise phone numbers to E.164", True),
        ("compute", "transform", "Normalise keys to snake_case", False),
        ("compute", "validate", "Validate that required fields are present", False),
        ("reducer", "aggregate", "OHLC candles per minute", True),
        ("reducer", "aggregate", "Sum order totals per customer", False),
        ("compute", "hash", "Hash passwords", False),
    ],
)
def test_hand_edit_points(node_type: str, kind: str, text: str, hand_edit: bool) -> None:
    assert (hand_edit_work(node_type, kind, text) is not None) is hand_edit


def test_typed_inputs_and_output_from_the_description() -> None:
    assert input_fields(
        "Computes a fraud risk score for each payment using amount, country and velocity"
    ) == [
        {"name": "amount", "type": "float"},
        {"name": "country", "type": "str"},
        {"name": "velocity", "type": "float"},
    ]
    assert input_fields("VAT and sales tax for invoice line items, with banker's rounding") == [
        {"name": "invoice_line_items", "type": "list[dict[str, Any]]"}
    ]
    assert input_fields("Hashes passwords") == []
    assert output_field("shipping_cost") == {"name": "shipping_cost", "type": "float"}
    assert output_field("markdown_document") == {"name": "markdown_document", "type": "Any"}


def test_workflow_reducer_cues() -> None:
    assert described_steps(
        "coordinate onboarding: create the account, send a welcome email, then provision a workspace;"
        " compensate if a step fails"
    ) == ["create the account", "send a welcome email", "provision a workspace"]
    assert paired_events("increment on connect, decrement on disconnect") == {
        "up": "connect",
        "down": "disconnect",
    }
    assert paired_events("count connections") is None
    assert window_seconds("page views in 5 minute tumbling windows") == 300
    assert window_seconds("candles per minute") == 60
    assert window_seconds("totals per customer") is None


def _node(tmp_path: Path) -> Path:
    answers = {
        "name": "NodeWidgetEffect",
        "node_type": "effect",
        "version": "1.0.0",
        "description": "Store widgets in postgres",
        "operations": ["store_widget"],
        "backends": ["postgres"],
        "performance_targets": {"latency_ms_p95": 50.0},
        "retries": 3,
    }
    (tmp_path / RECORD_NAME).write_text(make_record(answers, "1.0.0", "sha", {}), encoding="utf-8")
    return tmp_path


def test_answers_parse_like_the_value_they_replace(tmp_path: Path) -> None:
    node = _node(tmp_path)
    changed = change_answers(
        node,
        [
            "operations=store_widget, get_widget",
            "backends=postgres,redis",
            'performance_targets={"latency_ms_p95": 20}',
            "retries=5",
            "description=Store widgets in postgres and redis",
        ],
    )
    assert changed["operations"] == ["store_widget", "get_widget"]
    assert changed["backends"] == ["postgres", "redis"]
    assert changed["performance_targets"] == {"latency_ms_p95": 20}
    assert changed["retries"] == 5
    assert json.loads((node / RECORD_NAME).read_text())["answers"] == changed


@pytest.mark.parametrize(
    ("assignment", "fragment"),
    [
        ("name=NodeOtherEffect", "cannot be changed in place"),
        ("nonsense", "expected KEY=VALUE"),
        ("colour=blue", "unknown answer"),
        ("operations=Bad-Op", "invalid operation name"),
        ("performance_targets=[1]", "must be a JSON object"),
        ("performance_targets={", "must be a JSON object"),
        ("retries=many", "must be a number"),
        ("description=short", "at least 10 characters"),
    ],
)
def test_answers_refuse_bad_changes(tmp_path: Path, assignment: str, fragment: str) -> None:
    with pytest.raises(ModelOnexError, match=fragment):
        change_answers(_node(tmp_path), [assignment])
