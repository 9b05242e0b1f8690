"""The node's request: every field of the original node, plus ours (mode, wait, permits,
reentrant, lease_id, token). Unknown fields are rejected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.enum_lock_operation import EnumLockOperation

_NEEDS_NAME = {
    EnumLockOperation.ACQUIRE_LOCK,
    EnumLockOperation.RELEASE_LOCK,
    EnumLockOperation.EXTEND_LOCK,
    EnumLockOperation.GET_LOCK_INFO,
    EnumLockOperation.FORCE_RELEASE,
}


class ModelDistributedLockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    operation: EnumLockOperation = Field(validation_alias=AliasChoices("operation", "operation_type"))
    lock_name: str | None = Field(default=None, min_length=1, max_length=255)
    owner_id: str | None = Field(default=None, min_length=1, max_length=255)
    lease_duration: float | None = Field(
        default=None,
        ge=1,
        le=3600,
        validation_alias=AliasChoices("lease_duration", "lease_duration_seconds"),
    )
    extension_duration: float | None = Field(default=None, ge=1, le=3600)
    max_acquire_attempts: int | None = Field(default=None, ge=1, le=10)
    acquire_retry_delay: float | None = Field(default=None, ge=0, le=60)
    max_age_seconds: float | None = Field(default=None, ge=0)
    owner_metadata: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    correlation_id: str | None = Field(default=None, max_length=255)
    execution_id: str | None = Field(default=None, max_length=255)
    # ours
    mode: Literal["exclusive", "shared"] = "exclusive"
    wait: float = Field(default=0.0, ge=0, le=3600, description="Queue up to this many seconds.")
    permits: int | None = Field(default=None, ge=1, le=100_000)
    reentrant: bool = False
    lease_id: str | None = Field(
        default=None, description="Release/extend this lease; or your own id on acquire."
    )
    token: int | None = Field(default=None, description="Fencing token the caller expects to hold.")
    reason: str | None = Field(default=None, max_length=1000, description="Why (force_release).")
    limit: int = Field(default=100, ge=1, le=1000, description="Page size (list_locks).")
    prefix: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _name_when_needed(self) -> ModelDistributedLockRequest:
        if self.operation.canonical in _NEEDS_NAME and not self.lock_name:
            raise ValueError(f"lock_name is required for {self.operation.value}")
        return self

    def lease_metadata(self) -> dict[str, Any] | None:
        """``metadata`` with ``owner_metadata`` under its own key (both are kept on the lease)."""
        if self.owner_metadata is None:
            return self.metadata
        return {**(self.metadata or {}), "owner_metadata": self.owner_metadata}
