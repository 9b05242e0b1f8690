"""ONEX-compatible error codes and the base error model.

Member names and string values follow omnibase_core's ``EnumCoreErrorCode`` so that
code written against omnibase_core reads the same here. Only the groups this
package (and the nodes it generates) can raise are mirrored; a test checks that
every member referenced anywhere in the source tree exists.
"""

from __future__ import annotations

import re
from enum import Enum, unique
from typing import Any
from uuid import UUID


@unique
class EnumCoreErrorCode(str, Enum):
    """Core error codes, format ``ONEX_CORE_<NNN>_<DESCRIPTION>``."""

    # Generic validation errors (001-020)
    INVALID_PARAMETER = "ONEX_CORE_001_INVALID_PARAMETER"
    MISSING_REQUIRED_PARAMETER = "ONEX_CORE_002_MISSING_REQUIRED_PARAMETER"
    PARAMETER_TYPE_MISMATCH = "ONEX_CORE_003_PARAMETER_TYPE_MISMATCH"
    PARAMETER_OUT_OF_RANGE = "ONEX_CORE_004_PARAMETER_OUT_OF_RANGE"
    VALIDATION_FAILED = "ONEX_CORE_005_VALIDATION_FAILED"
    VALIDATION_ERROR = "ONEX_CORE_006_VALIDATION_ERROR"
    INVALID_INPUT = "ONEX_CORE_007_INVALID_INPUT"
    INVALID_OPERATION = "ONEX_CORE_008_INVALID_OPERATION"
    CONVERSION_ERROR = "ONEX_CORE_009_CONVERSION_ERROR"
    PARSING_ERROR = "ONEX_CORE_010_PARSING_ERROR"

    # File system errors (021-040)
    FILE_NOT_FOUND = "ONEX_CORE_021_FILE_NOT_FOUND"
    FILE_READ_ERROR = "ONEX_CORE_022_FILE_READ_ERROR"
    FILE_WRITE_ERROR = "ONEX_CORE_023_FILE_WRITE_ERROR"
    DIRECTORY_NOT_FOUND = "ONEX_CORE_024_DIRECTORY_NOT_FOUND"
    PERMISSION_DENIED = "ONEX_CORE_025_PERMISSION_DENIED"
    NOT_FOUND = "ONEX_CORE_028_NOT_FOUND"

    # Configuration errors (041-060)
    INVALID_CONFIGURATION = "ONEX_CORE_041_INVALID_CONFIGURATION"
    CONFIGURATION_NOT_FOUND = "ONEX_CORE_042_CONFIGURATION_NOT_FOUND"
    CONFIGURATION_PARSE_ERROR = "ONEX_CORE_043_CONFIGURATION_PARSE_ERROR"
    CONFIGURATION_ERROR = "ONEX_CORE_044_CONFIGURATION_ERROR"

    # Runtime errors (081-100)
    OPERATION_FAILED = "ONEX_CORE_081_OPERATION_FAILED"
    TIMEOUT_EXCEEDED = "ONEX_CORE_082_TIMEOUT_EXCEEDED"
    RESOURCE_UNAVAILABLE = "ONEX_CORE_083_RESOURCE_UNAVAILABLE"
    UNSUPPORTED_OPERATION = "ONEX_CORE_084_UNSUPPORTED_OPERATION"
    RESOURCE_NOT_FOUND = "ONEX_CORE_085_RESOURCE_NOT_FOUND"
    INVALID_STATE = "ONEX_CORE_086_INVALID_STATE"
    INITIALIZATION_FAILED = "ONEX_CORE_087_INITIALIZATION_FAILED"
    TIMEOUT = "ONEX_CORE_088_TIMEOUT"
    INTERNAL_ERROR = "ONEX_CORE_089_INTERNAL_ERROR"
    NETWORK_ERROR = "ONEX_CORE_090_NETWORK_ERROR"
    MIGRATION_ERROR = "ONEX_CORE_091_MIGRATION_ERROR"
    TIMEOUT_ERROR = "ONEX_CORE_092_TIMEOUT_ERROR"
    RESOURCE_ERROR = "ONEX_CORE_093_RESOURCE_ERROR"
    RUNTIME_ERROR = "ONEX_CORE_094_RUNTIME_ERROR"
    HANDLER_EXECUTION_ERROR = "ONEX_CORE_095_HANDLER_EXECUTION_ERROR"
    EVENT_BUS_ERROR = "ONEX_CORE_096_EVENT_BUS_ERROR"
    CONTRACT_VALIDATION_ERROR = "ONEX_CORE_097_CONTRACT_VALIDATION_ERROR"

    # Import and dependency errors (121-140)
    MODULE_NOT_FOUND = "ONEX_CORE_121_MODULE_NOT_FOUND"
    DEPENDENCY_UNAVAILABLE = "ONEX_CORE_122_DEPENDENCY_UNAVAILABLE"
    IMPORT_ERROR = "ONEX_CORE_124_IMPORT_ERROR"
    DEPENDENCY_ERROR = "ONEX_CORE_125_DEPENDENCY_ERROR"

    # Database errors (131-140)
    DATABASE_CONNECTION_ERROR = "ONEX_CORE_131_DATABASE_CONNECTION_ERROR"
    DATABASE_OPERATION_ERROR = "ONEX_CORE_132_DATABASE_OPERATION_ERROR"
    DATABASE_QUERY_ERROR = "ONEX_CORE_133_DATABASE_QUERY_ERROR"

    # Abstract method and implementation errors (141-160)
    METHOD_NOT_IMPLEMENTED = "ONEX_CORE_141_METHOD_NOT_IMPLEMENTED"
    ABSTRACT_METHOD_CALLED = "ONEX_CORE_142_ABSTRACT_METHOD_CALLED"

    # Authentication (161-180)
    AUTHENTICATION_ERROR = "ONEX_CORE_163_AUTHENTICATION_ERROR"

    # Service and system health errors (201-220)
    SYSTEM_HEALTH_DEGRADED = "ONEX_CORE_201_SYSTEM_HEALTH_DEGRADED"
    SERVICE_START_FAILED = "ONEX_CORE_202_SERVICE_START_FAILED"
    SERVICE_STOP_FAILED = "ONEX_CORE_203_SERVICE_STOP_FAILED"
    SERVICE_UNHEALTHY = "ONEX_CORE_204_SERVICE_UNHEALTHY"
    SERVICE_UNAVAILABLE = "ONEX_CORE_205_SERVICE_UNAVAILABLE"

    # Security errors (221-230)
    SECURITY_VIOLATION = "ONEX_CORE_222_SECURITY_VIOLATION"

    # Event and processing errors (231-240)
    EVENT_PROCESSING_FAILED = "ONEX_CORE_231_EVENT_PROCESSING_FAILED"

    # Contract and compliance errors (241-250)
    DEPENDENCY_FAILED = "ONEX_CORE_241_DEPENDENCY_FAILED"
    CONTRACT_VIOLATION = "ONEX_CORE_242_CONTRACT_VIOLATION"

    # Thread safety and concurrency errors (261-270)
    THREAD_SAFETY_VIOLATION = "ONEX_CORE_261_THREAD_SAFETY_VIOLATION"

    # Declarative node validation errors (271-280)
    NODE_EXECUTION_ERROR = "ONEX_CORE_273_NODE_EXECUTION_ERROR"

    def get_component(self) -> str:
        """The component part of the code (always ``CORE`` here)."""
        return "CORE"

    def get_number(self) -> int:
        """The numeric part of the code, e.g. 87 for ``INITIALIZATION_FAILED``."""
        match = re.search(r"ONEX_CORE_(\d+)_", self.value)
        return int(match.group(1)) if match else 0


@unique
class EnumOnexStatus(str, Enum):
    """Outcome status carried by errors and results (values as in omnibase_core)."""

    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    SKIPPED = "skipped"
    FIXED = "fixed"
    PARTIAL = "partial"
    INFO = "info"
    UNKNOWN = "unknown"


def _coerce_code(code: EnumCoreErrorCode | str | None) -> EnumCoreErrorCode | str | None:
    """A string naming a member (``"INVALID_INPUT"`` or its value) becomes the member."""
    if code is None or isinstance(code, EnumCoreErrorCode):
        return code
    text = str(code)
    if text in EnumCoreErrorCode.__members__:
        return EnumCoreErrorCode[text]
    try:
        return EnumCoreErrorCode(text)
    except ValueError:
        return text


def error_code_text(code: EnumCoreErrorCode | str | None) -> str:
    """The wire form of an error code: the enum's value, the string itself, or ``""``."""
    if isinstance(code, EnumCoreErrorCode):
        return code.value
    return code or ""


class ModelOnexError(Exception):
    """The ONEX error: a message, an error code, a status, a correlation id and context.

    The signature follows omnibase_core's ``ModelOnexError(message, error_code=...,
    status=..., correlation_id=..., **context)``: ``error_code`` may be an
    :class:`EnumCoreErrorCode`, a string (a member's name or value becomes the member;
    any other string is kept as it is) or None. ``context`` must never carry secrets;
    callers pass identifiers, not credentials.
    """

    def __init__(
        self,
        message: str,
        error_code: EnumCoreErrorCode | str | None = EnumCoreErrorCode.OPERATION_FAILED,
        status: EnumOnexStatus | str = EnumOnexStatus.ERROR,
        correlation_id: UUID | str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = _coerce_code(error_code)
        self.status = EnumOnexStatus(status) if status in EnumOnexStatus._value2member_map_ else status
        self.correlation_id = correlation_id
        self.context: dict[str, Any] = context

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: ``error_code``, ``message``, ``status``, ``correlation_id``, ``context``."""
        status = self.status.value if isinstance(self.status, EnumOnexStatus) else str(self.status)
        return {
            "error_code": error_code_text(self.error_code),
            "message": self.message,
            "status": status,
            "correlation_id": None if self.correlation_id is None else str(self.correlation_id),
            "context": self.context,
        }

    def __str__(self) -> str:
        code = error_code_text(self.error_code)
        return f"[{code}] {self.message}" if code else self.message
