"""ONEX-compatible core: node bases, container, errors and structured logging."""

from __future__ import annotations

from omninode_bridge.core.container import ModelONEXContainer
from omninode_bridge.core.errors import EnumCoreErrorCode, EnumOnexStatus, ModelOnexError, error_code_text
from omninode_bridge.core.logging import LogLevel, emit_log_event, redact
from omninode_bridge.core.nodes import (
    EnumNodeType,
    NodeBase,
    NodeCompute,
    NodeEffect,
    NodeOrchestrator,
    NodeReducer,
)

__all__ = [
    "EnumCoreErrorCode",
    "EnumNodeType",
    "EnumOnexStatus",
    "LogLevel",
    "ModelONEXContainer",
    "ModelOnexError",
    "NodeBase",
    "NodeCompute",
    "NodeEffect",
    "NodeOrchestrator",
    "NodeReducer",
    "emit_log_event",
    "error_code_text",
    "redact",
]
