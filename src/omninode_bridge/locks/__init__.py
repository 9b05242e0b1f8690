"""The lock engine: async client, sync facade, listener, migrations and SQL.

async with LockClient.connect(dsn) as locks:
    async with locks.lock("reports:nightly", ttl=30, wait=10) as lease:
        ...  # lease.token guards writes
"""

from __future__ import annotations

from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import (
    DeadlockDetectedError,
    ForbiddenError,
    LockDatabaseError,
    LockError,
    LockExpiredError,
    LockHeldByOtherError,
    LockNotFoundError,
    LockNotHeldError,
    LockTimeoutError,
    LockValidationError,
    StaleTokenError,
    UnauthorizedError,
)
from omninode_bridge.locks.models import Lease, LockInfo, LockMode, LockSummary
from omninode_bridge.locks.sync import SyncLockClient

__all__ = [
    "DeadlockDetectedError",
    "ForbiddenError",
    "Lease",
    "LockClient",
    "LockDatabaseError",
    "LockError",
    "LockExpiredError",
    "LockHeldByOtherError",
    "LockInfo",
    "LockMode",
    "LockNotFoundError",
    "LockNotHeldError",
    "LockSettings",
    "LockSummary",
    "LockTimeoutError",
    "LockValidationError",
    "StaleTokenError",
    "SyncLockClient",
    "UnauthorizedError",
]
