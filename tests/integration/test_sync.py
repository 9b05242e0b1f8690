"""The sync facade: same capabilities, including use inside the caller's transaction."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from omninode_bridge.locks import (
    LockExpiredError,
    LockHeldByOtherError,
    LockSettings,
    StaleTokenError,
    SyncLockClient,
)


@pytest.fixture
def sync_locks(dsn: str, settings: LockSettings):  # type: ignore[no-untyped-def]
    client = SyncLockClient.connect(dsn, settings=settings, cleanup=False)
    yield client
    client.close()


def test_sync_acquire_wait_release(sync_locks: SyncLockClient) -> None:
    lease = sync_locks.acquire("s", "a", ttl=30)
    with pytest.raises(LockHeldByOtherError):
        sync_locks.acquire("s", "b", ttl=30)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(sync_locks.acquire("s", "b", ttl=30, wait=5).token))
    t.start()
    time.sleep(0.2)
    assert sync_locks.release(lease) is True
    t.join(5)
    assert got and got[0] > lease.token
    info = sync_locks.get_lock_info("s")
    assert [h.owner_id for h in info.holders] == ["b"]
    assert sync_locks.counts()["active_leases"] == 1
    assert [s.name for s in sync_locks.list_locks(prefix="s")] == ["s"]


def test_sync_context_manager_and_auto_renew_loss(sync_locks: SyncLockClient) -> None:
    with sync_locks.lock("ctx", "a", ttl=30) as lease:
        with pytest.raises(LockHeldByOtherError):
            sync_locks.acquire("ctx", "b", ttl=30)
        lease.check()
    sync_locks.acquire("ctx", "b", ttl=30)  # released on exit

    with pytest.raises(LockExpiredError), sync_locks.lock("renew", "a", ttl=1, auto_renew=True) as lease:
        sync_locks.force_release("renew", "test")
        time.sleep(0.6)
        lease.check()


def test_lease_commits_and_rolls_back_with_the_callers_transaction(
    sync_locks: SyncLockClient, dsn: str
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, fence bigint)")
        conn.commit()
        with conn.transaction():
            lease = sync_locks.acquire("tx", "a", ttl=30, conn=conn)
            conn.execute("INSERT INTO orders VALUES (1, %s)", [lease.token])
            sync_locks.fence_guard(conn, "orders", lease.token)
            with pytest.raises(LockHeldByOtherError):  # held inside this very transaction
                sync_locks.acquire("tx", "b", ttl=30, conn=conn)
        with pytest.raises(LockHeldByOtherError):
            sync_locks.acquire("tx", "b", ttl=30)
        sync_locks.release(lease, conn=conn)
        conn.commit()

        try:
            with conn.transaction():
                sync_locks.acquire("tx-rollback", "a", ttl=30, conn=conn)
                raise RuntimeError("business logic failed")
        except RuntimeError:
            pass
        assert sync_locks.acquire("tx-rollback", "b", ttl=30).owner_id == "b"

        newer = sync_locks.acquire("tx", "c", ttl=30)
        with conn.transaction():
            sync_locks.fence_guard(conn, "orders", newer.token)
        with pytest.raises(StaleTokenError), conn.transaction():
            sync_locks.fence_guard(conn, "orders", lease.token)
