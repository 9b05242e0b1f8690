"""NodeDistributedLockEffect v1.0.0."""

from __future__ import annotations

from omninode_bridge.nodes.distributed_lock_effect.v1_0_0.node import NodeDistributedLockEffect

__all__ = ["NodeDistributedLockEffect"]
