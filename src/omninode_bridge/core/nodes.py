"""ONEX node base classes: effect, compute, reducer and orchestrator.

A node has a life cycle (``initialize`` → ``process``\\* → ``cleanup``), reports
``health()`` and ``metrics()``, and turns unexpected exceptions into
:class:`ModelOnexError`. Subclasses implement one typed entry point per kind
(``execute_effect``, ``execute_compute``, ``execute_reduction``,
``execute_orchestration``); ``process`` is the common alias.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

from omninode_bridge.core.container import ModelONEXContainer
from omninode_bridge.core.errors import EnumCoreErrorCode, ModelOnexError


class EnumNodeType(str, Enum):
    """The four ONEX node kinds."""

    EFFECT = "effect"
    COMPUTE = "compute"
    REDUCER = "reducer"
    ORCHESTRATOR = "orchestrator"


class NodeBase(ABC):
    """Shared life cycle and bookkeeping for every node kind."""

    node_type: ClassVar[EnumNodeType]

    def __init__(self, container: ModelONEXContainer) -> None:
        if not isinstance(container, ModelONEXContainer):
            raise ModelOnexError(
                "a node needs a ModelONEXContainer",
                EnumCoreErrorCode.PARAMETER_TYPE_MISMATCH,
                got=type(container).__name__,
            )
        self.container = container
        # omnibase_core nodes carry a node_id; the container may fix it (config "node_id").
        configured = container.get_config("node_id")
        self.node_id: UUID = UUID(str(configured)) if configured else uuid4()
        self.initialized = False
        self._started = time.monotonic()
        self._calls = 0
        self._failures = 0
        self._total_ms = 0.0

    async def initialize(self) -> None:
        """Acquire resources. Subclasses call ``super().initialize()`` last."""
        self.initialized = True

    async def cleanup(self) -> None:
        """Release resources. Safe to call twice."""
        self.initialized = False

    async def process(self, request: Any) -> Any:
        """Run one request through the kind's entry point, with timing and error mapping."""
        if not self.initialized:
            raise ModelOnexError(
                f"{type(self).__name__} is not initialized; call initialize() first",
                EnumCoreErrorCode.INVALID_STATE,
            )
        started = time.perf_counter()
        self._calls += 1
        try:
            return await self._dispatch(request)
        except ModelOnexError:
            self._failures += 1
            raise
        except Exception as err:
            self._failures += 1
            raise ModelOnexError(
                f"{type(self).__name__} failed: {err}",
                EnumCoreErrorCode.NODE_EXECUTION_ERROR,
            ) from err
        finally:
            self._total_ms += (time.perf_counter() - started) * 1000.0

    @abstractmethod
    async def _dispatch(self, request: Any) -> Any:
        """Call the kind-specific entry point."""

    async def health(self) -> dict[str, Any]:
        """Liveness summary; subclasses add their dependencies' state."""
        return {
            "status": "healthy" if self.initialized else "not_initialized",
            "node": type(self).__name__,
            "node_type": self.node_type.value,
            "node_id": str(self.node_id),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

    async def metrics(self) -> dict[str, Any]:
        """Call counts and mean latency since construction."""
        return {
            "calls": self._calls,
            "failures": self._failures,
            "mean_ms": round(self._total_ms / self._calls, 3) if self._calls else 0.0,
        }

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cleanup()


class NodeEffect(NodeBase):
    """A node with side effects (I/O). Implement ``execute_effect``."""

    node_type = EnumNodeType.EFFECT

    @abstractmethod
    async def execute_effect(self, request: Any) -> Any:
        """Perform the effect described by ``request``."""

    async def _dispatch(self, request: Any) -> Any:
        return await self.execute_effect(request)


class NodeCompute(NodeBase):
    """A pure computation. Implement ``execute_compute``."""

    node_type = EnumNodeType.COMPUTE

    @abstractmethod
    async def execute_compute(self, request: Any) -> Any:
        """Compute a result from ``request`` without side effects."""

    async def _dispatch(self, request: Any) -> Any:
        return await self.execute_compute(request)


class NodeReducer(NodeBase):
    """Folds many inputs into state. Implement ``execute_reduction``."""

    node_type = EnumNodeType.REDUCER

    @abstractmethod
    async def execute_reduction(self, request: Any) -> Any:
        """Reduce the items in ``request`` into an aggregate."""

    async def _dispatch(self, request: Any) -> Any:
        return await self.execute_reduction(request)


class NodeOrchestrator(NodeBase):
    """Coordinates steps/other nodes. Implement ``execute_orchestration``."""

    node_type = EnumNodeType.ORCHESTRATOR

    @abstractmethod
    async def execute_orchestration(self, request: Any) -> Any:
        """Run the workflow described by ``request``."""

    async def _dispatch(self, request: Any) -> Any:
        return await self.execute_orchestration(request)
