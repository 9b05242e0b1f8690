"""Demonstrations built on the engine (not the engine itself): ``omninode-lock demo``
runs :mod:`.contention`, worker processes contending for locks while invariants are
checked. Depends on ``locks`` only; nothing below it imports from here."""
