"""One exception hierarchy for the lock engine.

Every error carries a wire ``code`` (the SPEC's error codes, used by the HTTP API and
the node) and an ONEX :class:`EnumCoreErrorCode` (``err.error_code``, also the class
attribute ``onex_code``). ``str(err)`` shows the wire code, the one users meet on the
wire and in the CLI: ``LOCK_HELD_BY_OTHER: lock 'x' is held by ...``.
:func:`error_for_code` maps a wire code back to its class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from omninode_bridge.core.errors import EnumCoreErrorCode, ModelOnexError


class LockError(ModelOnexError):
    """Base class of every lock engine error."""

    code: ClassVar[str] = "LOCK_ERROR"
    onex_code: ClassVar[EnumCoreErrorCode] = EnumCoreErrorCode.OPERATION_FAILED

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, self.onex_code, **details)
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_wire(self) -> dict[str, Any]:
        """``{"error_code", "error_message", "details"}`` as the HTTP API sends it."""
        return {"error_code": self.code, "error_message": self.message, "details": self.details}


class LockHeldByOtherError(LockError):
    code = "LOCK_HELD_BY_OTHER"
    onex_code = EnumCoreErrorCode.RESOURCE_UNAVAILABLE


class LockNotFoundError(LockError):
    code = "LOCK_NOT_FOUND"
    onex_code = EnumCoreErrorCode.RESOURCE_NOT_FOUND


class LockNotHeldError(LockError):
    code = "LOCK_NOT_HELD"
    onex_code = EnumCoreErrorCode.INVALID_STATE


class LockExpiredError(LockError):
    code = "LOCK_EXPIRED"
    onex_code = EnumCoreErrorCode.INVALID_STATE


class LockTimeoutError(LockError):
    code = "LOCK_TIMEOUT"
    onex_code = EnumCoreErrorCode.TIMEOUT


class DeadlockDetectedError(LockError):
    code = "DEADLOCK_DETECTED"
    onex_code = EnumCoreErrorCode.OPERATION_FAILED


class LockValidationError(LockError):
    code = "VALIDATION_ERROR"
    onex_code = EnumCoreErrorCode.VALIDATION_ERROR


class LockDatabaseError(LockError):
    code = "DATABASE_ERROR"
    onex_code = EnumCoreErrorCode.DATABASE_CONNECTION_ERROR


class PoolExhaustedError(LockDatabaseError):
    """No pooled connection became free before the caller's deadline (not a database
    failure: it is not retried and does not trip the circuit breaker)."""


class SchemaVersionError(LockDatabaseError):
    """The database's lock schema is newer than this code: it has migrations this version
    does not know. Not transient - retrying cannot help; upgrade this program (or point
    it at another schema). Wire code ``DATABASE_ERROR``."""


class UnauthorizedError(LockError):
    code = "UNAUTHORIZED"
    onex_code = EnumCoreErrorCode.AUTHENTICATION_ERROR


class ForbiddenError(LockError):
    code = "FORBIDDEN"
    onex_code = EnumCoreErrorCode.PERMISSION_DENIED


class StaleTokenError(LockNotHeldError):
    """A write carried a fencing token older than one already seen for the resource."""


ERROR_CLASSES: dict[str, type[LockError]] = {
    cls.code: cls
    for cls in (
        LockHeldByOtherError,
        LockNotFoundError,
        LockNotHeldError,
        LockExpiredError,
        LockTimeoutError,
        DeadlockDetectedError,
        LockValidationError,
        LockDatabaseError,
        UnauthorizedError,
        ForbiddenError,
    )
}


def error_for_code(code: str, message: str, **details: Any) -> LockError:
    """Build the exception for wire ``code`` (unknown codes give a plain :class:`LockError`)."""
    return ERROR_CLASSES.get(code, LockError)(message, **details)
