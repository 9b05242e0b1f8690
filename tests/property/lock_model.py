"""A plain-Python model of the lock engine's rules (SPEC §1), for the stateful test.

Time is the database clock's offset in seconds, moved only by the test. Every TTL and
every jump is chosen so that a lease's expiry never falls within a minute of the clock
(TTLs are 60 mod 120, offsets multiples of 120), so the real seconds a run takes can
never decide whether a lease is live: the model and the database always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PERIOD = 120  # offsets move in multiples of this; TTLs are PERIOD/2 modulo PERIOD
TTLS = (60, 180, 300)


@dataclass
class ModelLease:
    lease_id: str
    name: str
    owner: str
    mode: str
    token: int
    expires: int  # database-clock offset (s) at which it ends
    hold: int = 1
    ended: str | None = None  # "released" | "force" (expiry is derived from the clock)
    row_gone: bool = False  # an expired lease's row was reaped (observed, not predicted)


@dataclass
class LockModel:
    now: int = 0
    permits: dict[str, int] = field(default_factory=dict)  # lock rows that exist
    last_token: dict[str, int] = field(default_factory=dict)
    max_token: int = 0
    leases: dict[str, ModelLease] = field(default_factory=dict)

    def live(self, lease: ModelLease) -> bool:
        return lease.ended is None and lease.expires > self.now

    def expired(self, lease: ModelLease) -> bool:
        return lease.ended is None and lease.expires <= self.now

    def holders(self, name: str) -> list[ModelLease]:
        return [le for le in self.leases.values() if le.name == name and self.live(le)]

    def compatible(self, name: str, mode: str, permits: int) -> bool:
        held = self.holders(name)
        n_exclusive = sum(1 for h in held if h.mode == "exclusive")
        if mode == "shared":
            return n_exclusive == 0
        return len(held) == n_exclusive and n_exclusive < permits

    def reentry(self, name: str, owner: str) -> list[ModelLease]:
        """Live exclusive leases that a reentrant exclusive acquire by ``owner`` may reuse."""
        return [h for h in self.holders(name) if h.owner == owner and h.mode == "exclusive"]

    def expect_acquire(self, name: str, owner: str, mode: str, permits: int | None, reentrant: bool) -> str:
        """``invalid`` | ``reentered`` | ``granted`` | ``busy``."""
        if permits is not None and name in self.permits and self.permits[name] != permits:
            return "invalid"
        if reentrant and mode == "exclusive" and self.reentry(name, owner):
            return "reentered"
        declared = self.permits.get(name, permits or 1)
        return "granted" if self.compatible(name, mode, declared) else "busy"

    def grant(self, lease: ModelLease, permits: int | None) -> None:
        self.permits.setdefault(lease.name, permits or 1)
        self.last_token[lease.name] = lease.token
        self.max_token = max(self.max_token, lease.token)
        self.leases[lease.lease_id] = lease

    def release_outcome(self, lease: ModelLease) -> str:
        """``released`` (True) | ``already`` (False) | ``expired`` | ``not_held``."""
        if lease.ended == "released":
            return "already"
        if lease.ended == "force":
            return "not_held"
        return "expired" if self.expired(lease) else "released"

    def extend_outcome(self, lease: ModelLease) -> str:
        """``extended`` | ``expired`` | ``not_held``."""
        if lease.ended is not None:
            return "not_held"
        return "expired" if self.expired(lease) else "extended"
