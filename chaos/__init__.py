"""The chaos run: client processes under injected faults, and a history checker.

``python -m chaos`` (``make chaos``) runs the full budget and writes
``bench/results/chaos.json``; ``tests/chaos`` runs a short budget in the suite.
Not part of the installed package.
"""

from __future__ import annotations
