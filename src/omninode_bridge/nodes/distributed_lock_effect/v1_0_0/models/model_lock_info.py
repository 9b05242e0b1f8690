"""One lock as the node reports it (the original's fields plus holders and queue)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .enum_lock_status import EnumLockStatus


class ModelLockInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lock_name: str
    status: EnumLockStatus
    owner_id: str | None = None
    mode: str | None = None
    token: int | None = Field(default=None, description="Fencing token of the lease described.")
    acquired_at: datetime | None = None
    expires_at: datetime | None = None
    lease_duration: float | None = None
    is_expired: bool = False
    hold_count: int = 0
    permits: int = 1
    last_token: int | None = None
    holders: list[dict[str, Any]] = Field(
        default_factory=list, description="Every holder, without lease ids."
    )
    waiters: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
