"""The history checker: what the clients believed against what PostgreSQL recorded.

Inputs are plain data (so the checks are unit-tested on hand-made histories):

- ``history``: the clients' JSONL records (see :mod:`chaos.history`): acquire, extend,
  release and protected-write operations with monotonic start/end times, the lease id
  the client chose, and the database-clock times the server answered with; ``belief``
  records, each a monotonic moment at which the client checked it still held a lease.
- ``DbView``: the database's side, read after the run: every lease ever inserted (from
  a trigger log: acquired_at, the last expires_at, the clock time its row was deleted),
  each lock's permits, the fenced writes in commit order, the outbox events, and the
  event ids read back from Kafka when a relay ran.

Every check returns human-readable violations; an empty list means it held.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ORPHAN_LIMIT = 1.0  # seconds a lease may outlive the request that definitely failed
DEFINITE_FAILURES = ("busy", "timeout", "cancelled")

Record = dict[str, Any]


def epoch(value: str | float | datetime | None) -> float | None:
    """A database time (ISO text, datetime or epoch seconds) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


@dataclass(slots=True)
class DbLease:
    """One lease as the database had it: held over ``[acquired_at, end)`` by its clock."""

    lease_id: str
    lock: str
    mode: str
    token: int
    acquired_at: float
    expires_at: float
    ended_at: float | None = None

    @property
    def end(self) -> float:
        return self.expires_at if self.ended_at is None else min(self.expires_at, self.ended_at)


@dataclass(slots=True)
class DbView:
    leases: dict[str, DbLease] = field(default_factory=dict)
    permits: dict[str, int] = field(default_factory=dict)
    writes: list[Record] = field(default_factory=list)  # {"id", "resource", "token", "lease_id"}
    events: list[Record] = field(default_factory=list)  # {"event_id", "event_type", "lease_id"}
    kafka: list[str] | None = None  # event ids consumed from Kafka (None: no relay ran)
    crashes: list[tuple[float, float]] = field(default_factory=list)  # immediate restarts (monotonic)


# A release that handed nothing on commits lazily (engine contract: a release lost in a
# crash leaves the lease held until its TTL; never a double grant). Its commit reaches
# the disk within 3 x wal_writer_delay (200 ms by default): only a crash this soon after
# the acknowledgement may take it back.
LAZY_WINDOW = 1.0


def lost_lazy_releases(history: list[Record], db: DbView) -> set[str]:
    """Lease ids whose acknowledged release left no event because a crash came while it
    committed or within :data:`LAZY_WINDOW` after - allowed by the contract, counted, not a
    violation. The lease must
    then have run to its expiry in the database (no release deleted it)."""
    released = _ids(db.events, "lock_released")
    lost = set()
    for r in history:
        if r["op"] != "release" or r["outcome"] != "released" or r["lease_id"] in released:
            continue
        lease = db.leases.get(r["lease_id"])
        ran_out = lease is not None and (lease.ended_at is None or lease.ended_at >= lease.expires_at)
        # the kill lands somewhere in the fault's [start, end]; the release committed in
        # [t0, t1] and was on disk at most LAZY_WINDOW later
        if ran_out and any(start <= r["t1"] + LAZY_WINDOW and end >= r["t0"] for start, end in db.crashes):
            lost.add(r["lease_id"])
    return lost


def _by_lock(db: DbView) -> dict[str, list[DbLease]]:
    out: dict[str, list[DbLease]] = defaultdict(list)
    for lease in db.leases.values():
        if lease.end > lease.acquired_at:
            out[lease.lock].append(lease)
    for leases in out.values():
        leases.sort(key=lambda x: x.acquired_at)
    return out


def check_exclusive_overlap(history: list[Record], db: DbView) -> list[str]:
    """An exclusive lease of a one-permit lock, or any exclusive lease and a shared one,
    overlapping on the same lock by the database clock."""
    found = []
    for lock, leases in _by_lock(db).items():
        single = db.permits.get(lock, 1) == 1
        for i, a in enumerate(leases):
            for b in leases[i + 1 :]:
                if b.acquired_at >= a.end:
                    continue
                clash = (a.mode != b.mode) or (a.mode == "exclusive" and single)
                if clash:
                    found.append(
                        f"{lock}: {a.mode} token {a.token} [{a.acquired_at:.3f}, {a.end:.3f}) overlaps "
                        f"{b.mode} token {b.token} [{b.acquired_at:.3f}, {b.end:.3f})"
                    )
    return found


def check_permits(history: list[Record], db: DbView) -> list[str]:
    """More exclusive holders at once than the lock's permits."""
    found = []
    for lock, leases in _by_lock(db).items():
        permits = db.permits.get(lock, 1)
        points = sorted(
            [(x.acquired_at, 1, x.token) for x in leases if x.mode == "exclusive"]
            + [(x.end, -1, x.token) for x in leases if x.mode == "exclusive"]
        )  # at equal times the end (-1) sorts first: [a, b) intervals touch, not overlap
        held = 0
        for at, step, token in points:
            held += step
            if held > permits:
                found.append(f"{lock}: {held} holders > {permits} permits at {at:.3f} (token {token})")
    return found


def check_stale_token(history: list[Record], db: DbView) -> list[str]:
    """A write the guard accepted with a token older than one it had accepted before."""
    found = []
    highest: dict[str, int] = {}
    for w in sorted(db.writes, key=lambda x: x["id"]):
        top = highest.get(w["resource"], -1)
        if w["token"] < top:
            found.append(f"{w['resource']}: write {w['id']} accepted token {w['token']} after {top}")
        highest[w["resource"]] = max(top, w["token"])
    return found


def check_lost_grant(history: list[Record], db: DbView) -> list[str]:
    """A grant (or extension) the client was told about that the database does not have."""
    found = []
    for r in history:
        if r["op"] == "acquire" and r["outcome"] == "granted":
            lease = db.leases.get(r["lease_id"])
            if lease is None:
                found.append(f"{r['client']}: granted {r['lock']} token {r['token']}, unknown to PostgreSQL")
            elif lease.token != r["token"]:
                found.append(f"{r['client']}: told token {r['token']}, PostgreSQL has {lease.token}")
        elif r["op"] == "extend" and r["outcome"] == "ok" and r["lease_id"] not in db.leases:
            found.append(f"{r['client']}: extended {r['lock']} token {r['token']}, unknown to PostgreSQL")
    return found


def _offsets(history: list[Record]) -> dict[str, float]:
    """Per lease: a lower bound of (database clock - client monotonic clock).

    A database time stamped while a request was in flight came before the reply, so
    ``db_time - t1`` (t1 = the monotonic time the reply arrived) bounds the offset from below.
    """
    best: dict[str, float] = {}
    for r in history:
        db_time = None
        if r["op"] == "acquire" and r["outcome"] == "granted":
            db_time = epoch(r["acquired_at"])
        elif r["op"] == "extend" and r["outcome"] == "ok":
            expires = epoch(r["expires_at"])
            db_time = None if expires is None else expires - float(r["ttl"])
        if db_time is not None:
            bound = db_time - r["t1"]
            best[r["lease_id"]] = max(best.get(r["lease_id"], bound), bound)
    return best


def check_belief_past_expiry(history: list[Record], db: DbView, slack: float = 0.002) -> list[str]:
    """A client that believed it held a lease at a moment the database had already ended it."""
    found = []
    offsets = _offsets(history)
    for r in history:
        if r["op"] != "belief":
            continue
        lease, off = db.leases.get(r["lease_id"]), offsets.get(r["lease_id"])
        if lease is None or off is None:
            continue
        at_least = r["m"] + off  # the database clock was at least this when the client believed
        if at_least > lease.end + slack:
            found.append(
                f"{r['client']}: believed it held {lease.lock} token {lease.token} "
                f"{at_least - lease.end:.3f} s after the database ended it"
            )
    return found


def clock_offset(history: list[Record]) -> tuple[float, float] | None:
    """Bounds (low, high) of (database clock - monotonic clock), from every grant.

    The clients share one machine's monotonic clock and the database one wall clock, so
    the offset is one number: a grant stamped ``acquired_at`` between a request's ``t0``
    and ``t1`` puts it within ``[acquired_at - t1, acquired_at - t0]``.
    """
    low, high = float("-inf"), float("inf")
    for r in history:
        if r["op"] == "acquire" and r["outcome"] == "granted":
            at = epoch(r["acquired_at"])
            if at is not None:
                low, high = max(low, at - r["t1"]), min(high, at - r["t0"])
    return (low, high) if low <= high else None


def check_orphan_lease(history: list[Record], db: DbView) -> list[str]:
    """A lease still held more than ORPHAN_LIMIT after its request definitely failed
    (busy, timed out or cancelled) was reported to the client: held by nobody.

    A grant that raced a partition and ran out before the client heard anything is not
    one: by the time the failure was reported, nobody held it.
    """
    found = []
    offset = clock_offset(history)
    for r in history:
        if r["op"] != "acquire" or r["outcome"] not in DEFINITE_FAILURES:
            continue
        lease = db.leases.get(r["lease_id"])
        if lease is None:
            continue
        # the failure was reported at t1: at the latest t1 + high by the database clock
        failed_at = r["t1"] + offset[1] if offset is not None else lease.acquired_at
        nobody = lease.end - max(lease.acquired_at, failed_at)
        if nobody > ORPHAN_LIMIT:
            found.append(
                f"{r['client']}: {r['outcome']} acquire of {r['lock']} (lease {r['lease_id'][:8]}) left "
                f"token {lease.token} held by nobody for {nobody:.3f} s after the failure"
            )
    return found


def _ids(events: Iterable[Record], kind: str) -> set[str]:
    return {str(e["lease_id"]) for e in events if e["event_type"] == kind and e["lease_id"] is not None}


def check_events(history: list[Record], db: DbView) -> list[str]:
    """Events missing from or invented in the outbox (against the clients and the lease log),
    and in Kafka (against the outbox)."""
    found = []
    acquired, released, extended = (
        _ids(db.events, k) for k in ("lock_acquired", "lock_released", "lock_extended")
    )
    asked = {r["lease_id"] for r in history if r["op"] == "acquire"}
    released |= lost_lazy_releases(history, db)
    for r in history:
        missing = (
            (r["op"] == "acquire" and r["outcome"] == "granted" and r["lease_id"] not in acquired)
            or (r["op"] == "release" and r["outcome"] == "released" and r["lease_id"] not in released)
            or (r["op"] == "extend" and r["outcome"] == "ok" and r["lease_id"] not in extended)
        )
        if missing:
            found.append(f"{r['client']}: {r['op']} of {r['lock']} ({r['outcome']}) has no event")
    for lease_id in sorted(acquired - asked):
        found.append(f"outbox: lock_acquired for lease {lease_id[:8]}… that no client asked for")
    for lease_id in sorted(set(db.leases) - acquired):
        found.append(f"outbox: lease {lease_id[:8]}… was granted without a lock_acquired event")
    for lease_id in sorted(acquired - set(db.leases)):
        found.append(f"outbox: lock_acquired for lease {lease_id[:8]}… that was never inserted")
    if db.kafka is not None:
        outbox, stream = {str(e["event_id"]) for e in db.events}, set(db.kafka)
        found += [f"kafka: event {x[:8]}… missing" for x in sorted(outbox - stream)]
        found += [f"kafka: event {x[:8]}… not in the outbox" for x in sorted(stream - outbox)]
    return found


CHECKS: dict[str, Callable[[list[Record], DbView], list[str]]] = {
    "exclusive_overlap": check_exclusive_overlap,
    "permits_exceeded": check_permits,
    "stale_token_accepted": check_stale_token,
    "lost_grant": check_lost_grant,
    "belief_past_expiry": check_belief_past_expiry,
    "orphan_lease": check_orphan_lease,
    "event_mismatch": check_events,
}


def check_all(history: list[Record], db: DbView) -> dict[str, list[str]]:
    """Every check's violations, by check name."""
    return {name: check(history, db) for name, check in CHECKS.items()}
