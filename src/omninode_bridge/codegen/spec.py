"""The answers stage 1 produces and every later stage reads (typed, one definition).

They come from a description (:func:`.pipeline.answers_from_prompt`) or a contract
(:func:`.pipeline.answers_from_contract`), are stored in the node's generation record
and are what ``update`` re-renders and ``answers`` changes.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict


class NodeAnswers(TypedDict, total=False):
    """What the node is: name, kind, subject, operations, backends, features, targets."""

    description: Required[str]
    name: Required[str]
    node_type: Required[str]  # effect | compute | reducer | orchestrator
    entity: Required[str]  # snake_case subject the operations act on
    domain: str
    operations: Required[list[str]]
    backends: Required[list[str]]
    features: Required[list[str]]
    performance_targets: Required[dict[str, float]]
    version: str  # "1.0.0"
    source: str  # "prompt" | "contract"
    classification: dict[str, Any]  # confidence and keyword scores (from a description)
    notes: list[str]  # the parser's or the contract reader's notes (not stored)
    step_timeout_s: float  # orchestrators: "30s timeout per step"
    operation_descriptions: dict[str, str]  # kept from a contract
    described_steps: list[str]  # orchestrators: legacy workflow_steps of a contract
    intelligence: dict[str, Any]  # stage 2: similar nodes and reused operations
