"""A small dependency container compatible with the ONEX ``ModelONEXContainer`` idea.

Nodes receive one container; it carries configuration values and named services
(pools, clients, event sinks) so tests can pass real objects without globals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from omninode_bridge.core.errors import EnumCoreErrorCode, ModelOnexError

T = TypeVar("T")


class ModelONEXContainer:
    """Configuration plus a registry of named services."""

    def __init__(self, config: Mapping[str, Any] | None = None, **services: Any) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self._services: dict[str, Any] = dict(services)

    def register(self, name: str, service: Any) -> None:
        """Register (or replace) a service under ``name``."""
        self._services[name] = service

    def has(self, name: str) -> bool:
        """Whether a service named ``name`` is registered."""
        return name in self._services

    def get(self, name: str, expected: type[T] | None = None) -> Any:
        """Return the service ``name``; raise ``RESOURCE_NOT_FOUND`` when missing."""
        try:
            service = self._services[name]
        except KeyError as err:
            raise ModelOnexError(
                f"service {name!r} is not registered in the container",
                EnumCoreErrorCode.RESOURCE_NOT_FOUND,
                service=name,
            ) from err
        if expected is not None and not isinstance(service, expected):
            raise ModelOnexError(
                f"service {name!r} is {type(service).__name__}, expected {expected.__name__}",
                EnumCoreErrorCode.PARAMETER_TYPE_MISMATCH,
                service=name,
            )
        return service

    def get_config(self, key: str, default: Any = None) -> Any:
        """Return configuration value ``key`` or ``default``."""
        return self.config.get(key, default)
