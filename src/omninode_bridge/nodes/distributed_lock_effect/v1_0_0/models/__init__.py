"""Models of NodeDistributedLockEffect: operations, statuses, lock info, request, response, config."""

from __future__ import annotations

from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.enum_lock_operation import EnumLockOperation
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.enum_lock_status import EnumLockStatus
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.model_config import (
    ModelDistributedLockConfig,
)
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.model_lock_info import ModelLockInfo
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.model_request import (
    ModelDistributedLockRequest,
)
from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.models.model_response import (
    ModelDistributedLockResponse,
    ModelPerformanceMetrics,
)

__all__ = [
    "EnumLockOperation",
    "EnumLockStatus",
    "ModelDistributedLockConfig",
    "ModelDistributedLockRequest",
    "ModelDistributedLockResponse",
    "ModelLockInfo",
    "ModelPerformanceMetrics",
]
