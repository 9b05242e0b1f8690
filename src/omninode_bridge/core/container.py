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
        self._typed: dict[tuple[Any, str | None], Any] = {}

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

    def register_service(self, protocol_type: Any, service: Any, name: str | None = None) -> None:
        """Register ``service`` as the provider of ``protocol_type`` (optionally under ``name``)."""
        self._typed[(protocol_type, name)] = service
        if name is not None:
            self._services[name] = service

    def get_service(self, protocol_type: Any, name: str | None = None) -> Any:
        """The service providing ``protocol_type`` (omnibase_core's ``get_service`` shape).

        Looked up by ``(protocol_type, name)``, then by ``name``, then (without a name) as
        the one registered service that is an instance of ``protocol_type``. Nothing is
        ever made up: a missing service raises ``SERVICE_UNAVAILABLE``. ``protocol_type`` is
        typed ``Any`` because mypy refuses a Protocol where ``type[T]`` is expected; annotate
        the variable that receives the service.
        """
        key = (protocol_type, name)
        if key in self._typed:
            return self._typed[key]
        if name is not None and name in self._services:
            return self._services[name]
        if name is None:
            found = [
                s for s in [*self._typed.values(), *self._services.values()] if _provides(s, protocol_type)
            ]
            unique = list({id(s): s for s in found}.values())
            if len(unique) == 1:
                return unique[0]
        label = getattr(protocol_type, "__name__", str(protocol_type))
        raise ModelOnexError(
            f"no service provides {label}"
            + (f" under the name {name!r}" if name else "")
            + " in the container: register one (register_service) before building the node",
            EnumCoreErrorCode.SERVICE_UNAVAILABLE,
            service=name or label,
        )

    def get_config(self, key: str, default: Any = None) -> Any:
        """Return configuration value ``key`` or ``default``."""
        return self.config.get(key, default)


def _provides(service: Any, protocol_type: type[Any]) -> bool:
    """``isinstance`` that treats a non-runtime-checkable Protocol as "cannot tell" (False)."""
    try:
        return isinstance(service, protocol_type)
    except TypeError:
        return False
