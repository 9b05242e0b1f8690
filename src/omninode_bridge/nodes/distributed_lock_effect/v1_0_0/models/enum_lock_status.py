"""Lock status as the original node reported it."""

from __future__ import annotations

from enum import Enum


class EnumLockStatus(str, Enum):
    AVAILABLE = "available"
    ACQUIRED = "acquired"
    EXPIRED = "expired"
    RELEASED = "released"
