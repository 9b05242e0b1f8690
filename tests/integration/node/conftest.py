"""The integration folder's helpers (the cuttable proxy) for the node tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
