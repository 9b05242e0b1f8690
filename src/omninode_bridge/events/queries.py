"""The relay's and feed's named SQL (``events/sql/queries.sql``), loaded once per schema.

Same rules as the engine's :mod:`omninode_bridge.locks.queries`: the schema identifier
is validated before it is written into the text; values travel as bind parameters.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from omninode_bridge.locks.queries import check_schema, named_blocks


def outbox_channel(schema: str) -> str:
    """The NOTIFY channel the outbox trigger of migration 0003 signals on commit."""
    return f"{check_schema(schema)}_outbox"


@cache
def load_event_queries(schema: str) -> dict[str, str]:
    """Every statement of ``events/sql/queries.sql`` by name, rendered for ``schema``."""
    text = resources.files("omninode_bridge.events").joinpath("sql", "queries.sql").read_text("utf-8")
    return named_blocks(text.replace("__schema__", f'"{check_schema(schema)}"'))
