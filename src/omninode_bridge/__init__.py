"""omninode_bridge: distributed locks on PostgreSQL and the omninode-generate node generator."""

from __future__ import annotations

__version__ = "0.1.0"
