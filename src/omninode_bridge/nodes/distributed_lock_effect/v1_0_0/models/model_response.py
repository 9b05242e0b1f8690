"""The node's response: every field of the original node, plus ``operation_type``,
``performance_metrics``, the lease (id and token) of an acquire, and listings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.enum_lock_operation import EnumLockOperation
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.model_lock_info import ModelLockInfo


class ModelPerformanceMetrics(BaseModel):
    execution_time_ms: float = 0.0
    database_time_ms: float = 0.0
    retry_count: int = 0


class ModelDistributedLockResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    success: bool
    operation: EnumLockOperation
    operation_type: EnumLockOperation
    lock_info: ModelLockInfo | None = None
    locks: list[dict[str, Any]] = Field(default_factory=list)
    lease_id: str | None = Field(default=None, description="Secret handle of the lease (acquire only).")
    token: int | None = None
    lock_acquired: bool = False
    lock_released: bool = False
    lock_extended: bool = False
    cleaned_count: int = 0
    cleaned_lock_names: list[str] = Field(default_factory=list)
    error_message: str | None = None
    error_code: str | None = None
    retry_after_seconds: float | None = None
    duration_ms: float = 0.0
    acquire_attempts: int = 0
    database_query_ms: float = 0.0
    warnings: list[str] = Field(default_factory=list)
    correlation_id: str | None = None
    execution_id: str | None = None
    completed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    performance_metrics: ModelPerformanceMetrics = Field(default_factory=ModelPerformanceMetrics)

    @property
    def locks_cleaned(self) -> int:
        """The original output_state's name for ``cleaned_count``."""
        return self.cleaned_count
