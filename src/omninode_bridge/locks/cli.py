"""omninode-lock command line (placeholder until the engine lands)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("omninode-lock: not yet implemented")
