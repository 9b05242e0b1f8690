"""Stateful property test: the async engine on a real PostgreSQL against a Python model.

Hypothesis drives random sequences of try-locks (exclusive, shared, semaphores,
reentrant, retried with the same lease id), releases, extends, force-releases, cleanups,
info and listings, jumps of the database clock (the server runs under libfaketime, see
``faketime_pg``) and blocking acquires that are cancelled, granted, or cancelled right as
they are granted. After every step the lease, waiter and lock rows must be what the
model says: the same live holders with the same hold counts, no waiter left behind,
counters equal to the rows, and every lock's last token the newest grant's.

``HYPOTHESIS_PROFILE=long`` runs many more and longer sequences.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from typing import Any

import asyncpg
import pytest
from faketime_pg import FakeClockPostgres, run_in_own_loop
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from lock_model import PERIOD, TTLS, LockModel, ModelLease

from omninode_bridge.locks import (
    Lease,
    LockClient,
    LockExpiredError,
    LockHeldByOtherError,
    LockNotFoundError,
    LockNotHeldError,
    LockSettings,
    LockValidationError,
)

pytestmark = pytest.mark.integration

SCHEMA = "omninode_locks"
TEMPLATE = "omninode_props_tpl"
NAMES = ("a", "b", "c")
OWNERS = ("o1", "o2", "o3")
PROFILES = {
    "default": settings(
        max_examples=30,
        stateful_step_count=40,
        deadline=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    ),
    "long": settings(
        max_examples=300,
        stateful_step_count=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    ),
}
# the model's clock argument (see lock_model) needs each run to stay well under a minute
RUN_LIMIT_S = 45.0
_databases = itertools.count()

STATE_SQL = f"""
SELECT lease_id::text AS lease_id, name, owner_id, mode, token, hold_count,
       expires_at > now() AS live
  FROM {SCHEMA}.leases
"""
LOCKS_SQL = f"""
SELECT k.name, k.permits, k.fence, k.n_exclusive, k.n_shared, k.n_waiting,
       (SELECT count(*) FROM {SCHEMA}.leases l WHERE l.name = k.name AND l.mode = 'exclusive') AS exclusive,
       (SELECT count(*) FROM {SCHEMA}.leases l WHERE l.name = k.name AND l.mode = 'shared') AS shared,
       (SELECT count(*) FROM {SCHEMA}.waiters w WHERE w.name = k.name) AS waiting
  FROM {SCHEMA}.locks k
"""


class EngineVersusModel(RuleBasedStateMachine):
    """One fresh database per run; the clock offset only ever grows (see lock_model)."""

    server: FakeClockPostgres  # set by the test before the run
    checked = 0  # invariant passes over all runs (the test asserts they happened)
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.started = time.monotonic()
        self.model = LockModel(now=self.server.offset)
        self.waiter_ids = itertools.count()
        self.undone_grants = 0
        self.db = f"omninode_props_{os.getpid()}_{next(_databases)}"
        self.dsn = self.server.dsn.replace("/postgres?", f"/{self.db}?")
        self.run(self._open())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> None:
        admin = await asyncpg.connect(self.server.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{self.db}" TEMPLATE "{TEMPLATE}"')
        finally:
            await admin.close()
        self.conn = await asyncpg.connect(self.dsn)
        settings_ = LockSettings(
            schema=SCHEMA, pool_min=1, pool_max=4, recheck_interval=1.0, cleanup_interval=3600
        )
        self.locks = await LockClient.connect(
            self.dsn, settings=settings_, cleanup=False, run_migrations=False
        )

    def teardown(self) -> None:
        async def close() -> None:
            await self.locks.close()
            await self.conn.close()
            admin = await asyncpg.connect(self.server.dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            finally:
                await admin.close()

        try:
            self.run(close())
        finally:
            self.loop.close()

    # -- helpers ------------------------------------------------------------------

    def _record_grant(self, lease: Lease, permits: int | None) -> ModelLease:
        name = lease.lock_name
        assert lease.token > self.model.last_token.get(name, 0), "a fencing token did not increase"
        assert lease.token > self.model.max_token, "a token was issued twice"
        ttl = int(lease.ttl)
        entry = ModelLease(
            lease.lease_id, name, lease.owner_id, lease.mode.value, lease.token, self.model.now + ttl
        )
        self.model.grant(entry, permits)
        return entry

    async def _release_all(self, name: str) -> None:
        for holder in self.model.holders(name):
            while holder.hold > 0:
                assert await self.locks.release(holder.lease_id) is True
                holder.hold -= 1
            holder.hold, holder.ended = 1, "released"

    async def _settled_rows(self, owner: str) -> tuple[int, int]:
        """Waiters left and leases of ``owner``, once background undo work has finished."""
        for _ in range(40):
            waiting = await self.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.waiters")
            held = await self.conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.leases WHERE owner_id = $1", owner
            )
            if waiting == 0 and held == 0:
                break
            await asyncio.sleep(0.05)
        return waiting, held

    # -- rules --------------------------------------------------------------------

    @rule(
        target=leases,
        name=st.sampled_from(NAMES),
        owner=st.sampled_from(OWNERS),
        mode=st.sampled_from(["exclusive", "exclusive", "shared"]),
        ttl=st.sampled_from(TTLS),
        permits=st.sampled_from([None, None, 1, 2, 3]),
        reentrant=st.booleans(),
    )
    def try_lock(
        self, name: str, owner: str, mode: str, ttl: int, permits: int | None, reentrant: bool
    ) -> Any:
        expected = self.model.expect_acquire(name, owner, mode, permits, reentrant)
        reusable = {le.lease_id: le for le in self.model.reentry(name, owner)}
        try:
            lease = self.run(
                self.locks.acquire(name, owner, mode=mode, ttl=ttl, permits=permits, reentrant=reentrant)
            )
        except LockValidationError:
            assert expected == "invalid", f"refused as invalid, model says {expected}"
            return multiple()
        except LockHeldByOtherError:
            assert expected == "busy", f"refused as busy, model says {expected}"
            self.model.permits.setdefault(name, permits or 1)
            return multiple()
        assert expected in ("granted", "reentered"), f"granted, model says {expected}"
        assert (lease.lock_name, lease.owner_id, lease.mode.value) == (name, owner, mode)
        if expected == "reentered":
            entry = reusable.get(lease.lease_id)
            assert entry is not None, "a reentrant acquire did not reuse the owner's lease"
            assert lease.token == entry.token and lease.hold_count == entry.hold + 1
            entry.hold += 1
            entry.expires = max(entry.expires, self.model.now + ttl)
            return multiple()
        assert lease.hold_count == 1
        return self._record_grant(lease, permits).lease_id

    @rule(lease_id=leases, ttl=st.sampled_from(TTLS))
    def retry_with_same_lease_id(self, lease_id: str, ttl: int) -> None:
        """An acquire retried with its lease id finds its own lease; an ended one is refused."""
        entry = self.model.leases[lease_id]
        try:
            lease = self.run(
                self.locks.acquire(entry.name, entry.owner, mode=entry.mode, ttl=ttl, lease_id=lease_id)
            )
        except LockValidationError:
            assert not self.model.live(entry), "a retry of a live lease was refused"
            return
        assert lease.lease_id == lease_id and lease.token == entry.token and lease.hold_count == entry.hold
        if not self.model.live(entry):
            # an expired lease whose row is not reaped yet is found as it is: already over
            assert self.model.expired(entry) and lease.remaining() <= 0, "a retry revived an ended lease"

    @rule(lease_id=leases)
    def release(self, lease_id: str) -> None:
        entry = self.model.leases[lease_id]
        expected = self.model.release_outcome(entry)
        try:
            released = self.run(self.locks.release(lease_id))
        except LockExpiredError:
            assert expected == "expired", f"release said expired, model says {expected}"
            entry.row_gone = True  # releasing an expired lease reaps it
            return
        except LockNotHeldError:
            assert expected == "not_held", f"release said not held, model says {expected}"
            return
        assert released is (expected == "released"), f"release returned {released}, model says {expected}"
        if expected == "released":
            entry.hold -= 1
            if entry.hold == 0:
                entry.hold, entry.ended = 1, "released"

    @rule(lease_id=leases, ttl=st.sampled_from(TTLS))
    def extend(self, lease_id: str, ttl: int) -> None:
        entry = self.model.leases[lease_id]
        expected = self.model.extend_outcome(entry)
        try:
            lease = self.run(self.locks.extend_lease_id(lease_id, ttl))
        except LockExpiredError:
            assert expected == "expired", f"extend said expired, model says {expected}"
            return
        except LockNotHeldError:
            assert expected == "not_held", f"extend said not held, model says {expected}"
            return
        assert expected == "extended", f"extended, model says {expected}"
        assert lease.token == entry.token and lease.lease_id == lease_id
        entry.expires = self.model.now + ttl

    @rule(name=st.sampled_from(NAMES))
    def force_release(self, name: str) -> None:
        rows = self.run(self.conn.fetch(f"SELECT lease_id::text FROM {SCHEMA}.leases WHERE name = $1", name))
        present = {r["lease_id"] for r in rows}
        try:
            count = self.run(self.locks.force_release(name, "property test"))
        except LockNotFoundError:
            assert name not in self.model.permits, "force-release did not find a lock that exists"
            return
        assert name in self.model.permits, "force-release found a lock never used"
        assert count == len(present)
        for lease_id in present:
            self.model.leases[lease_id].ended = "force"

    @rule(name=st.sampled_from(NAMES))
    def info(self, name: str) -> None:
        try:
            info = self.run(self.locks.get_lock_info(name))
        except LockNotFoundError:
            assert name not in self.model.permits
            return
        expected = {(h.lease_id, h.owner, h.mode, h.token, h.hold) for h in self.model.holders(name)}
        got = {(h.lease_id, h.owner_id, h.mode.value, h.token, h.hold_count) for h in info.holders}
        assert got == expected
        assert info.permits == self.model.permits[name] and info.waiters == []
        assert info.last_token == self.model.last_token.get(name, info.last_token)

    @rule()
    def list_and_count(self) -> None:
        summaries = self.run(self.locks.list_locks())
        expected = {}
        for name in NAMES:
            held = self.model.holders(name)
            if held:
                expected[name] = (len(held), sorted({h.owner for h in held}))
        assert {s.name: (s.holders, sorted(set(s.owners))) for s in summaries} == expected
        counts = self.run(self.locks.counts())
        assert counts["active_leases"] == sum(len(self.model.holders(n)) for n in NAMES)
        assert counts["active_locks"] == len(expected) and counts["waiters"] == 0

    @rule(jump=st.sampled_from([PERIOD, 2 * PERIOD, 5 * PERIOD]))
    def advance_database_clock(self, jump: int) -> None:
        self.server.set_offset(self.server.offset + jump)
        self.model.now = self.server.offset
        now = self.run(self.conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
        assert float(now) - time.time() > self.model.now - 30, "the database clock did not move"

    @rule()
    def cleanup(self) -> None:
        unreaped = self.run(
            self.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.leases WHERE expires_at <= now()")
        )
        assert self.run(self.locks.cleanup_expired()) == unreaped
        for entry in self.model.leases.values():
            if self.model.expired(entry):
                entry.row_gone = True

    def _busy_for_exclusive(self) -> list[str]:
        return [n for n in NAMES if n in self.model.permits and self.model.holders(n)
                and not self.model.compatible(n, "exclusive", self.model.permits[n])]  # fmt: skip

    @precondition(lambda self: bool(self._busy_for_exclusive()))
    @rule(data=st.data(), how=st.sampled_from(["cancel", "release_then_cancel", "release_then_await"]))
    def blocking_acquire(self, data: st.DataObject, how: str) -> None:
        """A queued exclusive acquire that is cancelled, granted, or both at once: it
        never leaves a waiter nor a lease nobody knows about."""
        name = data.draw(st.sampled_from(self._busy_for_exclusive()))
        owner = f"w{next(self.waiter_ids)}"
        self.run(self._blocking(name, owner, how))

    async def _blocking(self, name: str, owner: str, how: str) -> None:
        task = asyncio.ensure_future(self.locks.acquire(name, owner, ttl=TTLS[0], wait=30))
        for _ in range(100):
            if await self.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.waiters WHERE owner_id = $1", owner):
                break
            await asyncio.sleep(0.02)
        else:
            task.cancel()
            raise AssertionError("the blocking acquire never queued")
        assert not task.done(), "a blocked acquire returned while the lock was busy"
        if how != "cancel":
            await self._release_all(name)
        if how != "release_then_await":
            task.cancel()
        try:
            lease = await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            assert how != "release_then_await"
            assert await self._settled_rows(owner) == (0, 0), "a cancelled acquire left a waiter or a lease"
            await self._undone_grant(name, owner)
            return
        assert how != "cancel", "a cancelled acquire was granted while the lock stayed busy"
        assert lease.owner_id == owner
        entry = self._record_grant(lease, None)
        if how == "release_then_cancel":  # granted before the cancel landed: give it back,
            assert await self.locks.release(lease) is True  # so both outcomes leave one state
            entry.ended = "released"

    async def _undone_grant(self, name: str, owner: str) -> None:
        """A grant that raced the cancellation must have been released at once (nobody
        knew of it); the lock's token moved on all the same."""
        events = await self.conn.fetch(
            f"SELECT event_type, token, payload FROM {SCHEMA}.events WHERE owner_id = $1 ORDER BY id", owner
        )
        kinds = [e["event_type"] for e in events]
        assert kinds in ([], ["lock_acquired", "lock_released"]), f"a cancelled acquire left {kinds}"
        if kinds:
            token = events[0]["token"]
            assert events[1]["token"] == token and json.loads(events[1]["payload"])["held_ms"] < 1000
            assert token > self.model.last_token.get(name, 0)
            self.model.last_token[name] = token
            self.model.max_token = max(self.model.max_token, token)
            self.undone_grants += 1

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def rows_match_the_model(self) -> None:
        assert time.monotonic() - self.started < RUN_LIMIT_S, "a run took too long for the clock argument"
        rows = self.run(self.conn.fetch(STATE_SQL))
        live = {
            r["lease_id"]: (r["name"], r["owner_id"], r["mode"], r["token"], r["hold_count"])
            for r in rows
            if r["live"]
        }
        expected = {
            le.lease_id: (le.name, le.owner, le.mode, le.token, le.hold)
            for le in self.model.leases.values()
            if self.model.live(le)
        }
        assert live == expected, "the live leases differ from the model"
        for r in rows:
            if not r["live"]:
                entry = self.model.leases.get(r["lease_id"])
                assert entry is not None and self.model.expired(entry) and not entry.row_gone, (
                    f"an unexpected lease row {dict(r)}"
                )
        for entry in self.model.leases.values():
            if self.model.expired(entry) and entry.lease_id not in {r["lease_id"] for r in rows}:
                entry.row_gone = True  # reaped by the engine along the way (allowed at any time)
        locks = self.run(self.conn.fetch(LOCKS_SQL))
        assert {r["name"]: r["permits"] for r in locks} == self.model.permits
        for r in locks:
            assert (r["n_exclusive"], r["n_shared"], r["n_waiting"]) == (
                r["exclusive"],
                r["shared"],
                r["waiting"],
            ), f"lock counters drifted from the rows: {dict(r)}"
            assert r["waiting"] == 0, "a waiter was left in the queue"
            if r["name"] in self.model.last_token:
                assert r["fence"] == self.model.last_token[r["name"]], (
                    "the lock's last token is not the newest grant"
                )
        type(self).checked += 1  # the database was compared with the model once more


PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")


@pytest.mark.timeout(7200 if PROFILE == "long" else 600)
def test_engine_matches_the_model(fake_clock_pg: FakeClockPostgres) -> None:
    profile = PROFILES[PROFILE]
    EngineVersusModel.server = fake_clock_pg
    EngineVersusModel.checked = 0
    run_state_machine_as_test(EngineVersusModel, settings=profile)
    # the rules' own assertions and the invariant above decide; this only proves they ran
    assert EngineVersusModel.checked > 0, "the engine was never compared with the model"


def test_database_clock_moves_and_the_engine_follows(fake_clock_pg: FakeClockPostgres) -> None:
    """The fixture itself: a lease expires when (and only when) the database clock says."""

    async def scenario() -> None:
        db = f"omninode_props_clock_{uuid.uuid4().hex[:6]}"
        admin = await asyncpg.connect(fake_clock_pg.dsn)
        await admin.execute(f'CREATE DATABASE "{db}" TEMPLATE "{TEMPLATE}"')
        dsn = fake_clock_pg.dsn.replace("/postgres?", f"/{db}?")
        try:
            cfg = LockSettings(schema=SCHEMA, pool_min=1, pool_max=2, cleanup_interval=3600)
            async with LockClient.connect(dsn, settings=cfg, cleanup=False) as locks:
                lease = await locks.acquire("clock", "a", ttl=60)
                with pytest.raises(LockHeldByOtherError):
                    await locks.acquire("clock", "b", ttl=60)
                fake_clock_pg.set_offset(fake_clock_pg.offset + PERIOD)
                taken = await locks.acquire("clock", "b", ttl=60)  # real time: well under 60 s
                assert taken.token > lease.token
                with pytest.raises(LockExpiredError):
                    await locks.release(lease)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()

    run_in_own_loop(scenario())
