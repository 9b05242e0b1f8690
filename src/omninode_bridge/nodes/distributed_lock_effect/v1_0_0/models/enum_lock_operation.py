"""Operations of the lock node: the contract's names and the original node's short ones."""

from __future__ import annotations

from enum import Enum


class EnumLockOperation(str, Enum):
    """``acquire_lock`` … ``force_release``; ``acquire|release|extend|query|cleanup`` are the
    original node's names for the same operations (accepted for drop-in callers)."""

    ACQUIRE_LOCK = "acquire_lock"
    RELEASE_LOCK = "release_lock"
    EXTEND_LOCK = "extend_lock"
    GET_LOCK_INFO = "get_lock_info"
    LIST_LOCKS = "list_locks"
    CLEANUP_EXPIRED = "cleanup_expired"
    FORCE_RELEASE = "force_release"
    ACQUIRE = "acquire"
    RELEASE = "release"
    EXTEND = "extend"
    QUERY = "query"
    CLEANUP = "cleanup"

    @property
    def canonical(self) -> EnumLockOperation:
        """The contract operation this name stands for."""
        return _ALIASES.get(self, self)


_ALIASES = {
    EnumLockOperation.ACQUIRE: EnumLockOperation.ACQUIRE_LOCK,
    EnumLockOperation.RELEASE: EnumLockOperation.RELEASE_LOCK,
    EnumLockOperation.EXTEND: EnumLockOperation.EXTEND_LOCK,
    EnumLockOperation.QUERY: EnumLockOperation.GET_LOCK_INFO,
    EnumLockOperation.CLEANUP: EnumLockOperation.CLEANUP_EXPIRED,
}
