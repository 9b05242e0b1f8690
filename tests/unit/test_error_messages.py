"""Lock errors read with the wire code users meet everywhere; the ONEX code stays an attribute."""

from __future__ import annotations

from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError
from omninode_bridge.locks.errors import (
    ERROR_CLASSES,
    LockDatabaseError,
    LockHeldByOtherError,
    LockValidationError,
    error_for_code,
)


def test_str_shows_the_wire_code_not_the_onex_code() -> None:
    err = LockHeldByOtherError("lock 'x' is held by worker-1 until 12:00:03", lock_name="x")
    assert str(err) == "LOCK_HELD_BY_OTHER: lock 'x' is held by worker-1 until 12:00:03"
    assert "ONEX_CORE" not in str(err)
    assert err.error_code is EnumCoreErrorCode.RESOURCE_UNAVAILABLE
    assert err.to_dict()["error_code"] == "ONEX_CORE_083_RESOURCE_UNAVAILABLE"
    assert isinstance(err, ModelOnexError)


def test_every_error_class_formats_the_same_way() -> None:
    for code, cls in ERROR_CLASSES.items():
        err = error_for_code(code, "what happened")
        assert isinstance(err, cls)
        assert str(err) == f"{code}: what happened"
        assert err.error_code is cls.onex_code
    assert str(LockValidationError("bad", field="dsn")) == "VALIDATION_ERROR: bad"
    assert str(LockDatabaseError("down")) == "DATABASE_ERROR: down"
