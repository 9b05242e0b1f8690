"""Fixtures for the event relay tests (defined in relay_helpers)."""

from __future__ import annotations

from relay_helpers import broker, pool, prefix

__all__ = ["broker", "pool", "prefix"]
