"""Request bodies of the HTTP API: strict pydantic models (unknown fields and wrong
types are rejected before the engine is called, so bad input never changes state)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The engine validates ranges again (one rule, one place: locks/models.py); these
# bounds only make the OpenAPI document say what the engine accepts.
_STRICT = ConfigDict(extra="forbid", strict=True)


class AcquireBody(BaseModel):
    """``POST /v1/locks/{name}/acquire``: only ``owner_id`` is required."""

    model_config = _STRICT

    owner_id: str = Field(min_length=1, max_length=255, description="Who holds the lease.")
    mode: Literal["exclusive", "shared"] = "exclusive"
    ttl: float | None = Field(default=None, ge=1, le=3600, description="Seconds; default from config.")
    wait: float = Field(default=0.0, ge=0, le=3600, description="0 = try once; T = long-poll T s.")
    permits: int | None = Field(default=None, ge=1, le=100_000, description="Semaphore size.")
    reentrant: bool = False
    metadata: dict[str, Any] | None = Field(default=None, description="JSON object, <= 4 KiB.")
    lease_id: str | None = Field(
        default=None, description="Your own UUID: a retried request finds its earlier grant."
    )
    correlation_id: str | None = Field(
        default=None, min_length=1, max_length=255, description="Carried by the events this call causes."
    )


class ReleaseBody(BaseModel):
    model_config = _STRICT

    lease_id: str = Field(min_length=1, max_length=64)
    correlation_id: str | None = Field(
        default=None, min_length=1, max_length=255, description="Carried by the events this call causes."
    )


class ExtendBody(BaseModel):
    model_config = _STRICT

    lease_id: str = Field(min_length=1, max_length=64)
    ttl: float | None = Field(default=None, ge=1, le=3600)
    correlation_id: str | None = Field(
        default=None, min_length=1, max_length=255, description="Carried by the events this call causes."
    )


class LeaseOut(BaseModel):
    """A lease as the acquire/extend routes return it (the only place a lease id is shown)."""

    lock_name: str
    owner_id: str
    mode: str
    lease_id: str
    token: int
    acquired_at: str
    expires_at: str
    ttl: float
    metadata: dict[str, Any]


class ErrorOut(BaseModel):
    error_code: str
    error_message: str
    details: dict[str, Any] = {}
