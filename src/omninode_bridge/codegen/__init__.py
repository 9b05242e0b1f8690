"""``omninode-generate``: a deterministic ONEX node generator (nine timed stages).

Entry points: :func:`omninode_bridge.codegen.pipeline.generate`, the
``omninode-generate`` CLI (:mod:`.cli`), ``update`` (:mod:`.update`) and
``omninode-check`` (:mod:`.check`).
"""

from __future__ import annotations
