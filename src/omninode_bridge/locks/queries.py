"""Load the named SQL statements and migrations, with the schema identifier filled in.

Identifiers are validated before use (never taken from request data); values always
travel as bind parameters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from omninode_bridge.locks.errors import LockValidationError

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.M)


def check_schema(schema: str) -> str:
    """Return ``schema`` if it is a safe lowercase identifier of at most 40 characters."""
    if not _IDENT.fullmatch(schema):
        raise LockValidationError(
            f"schema name {schema!r} must match {_IDENT.pattern} (lowercase, digits, underscore)",
            schema=schema,
        )
    return schema


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel that carries grants for ``schema``."""
    return f"{check_schema(schema)}_grants"


def _render(text: str, schema: str) -> str:
    return text.replace("__channel__", channel_for(schema)).replace("__schema__", f'"{schema}"')


def _sql_file(*parts: str) -> str:
    node = resources.files("omninode_bridge.locks").joinpath("sql", *parts)
    return node.read_text(encoding="utf-8")


def named_blocks(text: str) -> dict[str, str]:
    """The statements of a ``-- name: x`` file (procrastinate's format) by name."""
    names = list(_NAME_LINE.finditer(text))
    queries: dict[str, str] = {}
    for i, match in enumerate(names):
        end = names[i + 1].start() if i + 1 < len(names) else len(text)
        queries[match.group(1)] = text[match.end() : end].strip()
    return queries


@cache
def load_queries(schema: str) -> dict[str, str]:
    """All statements of ``sql/queries.sql`` by name, rendered for ``schema``."""
    return named_blocks(_render(_sql_file("queries.sql"), check_schema(schema)))


@dataclass(frozen=True)
class Migration:
    """One versioned migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@cache
def load_migrations(schema: str) -> tuple[Migration, ...]:
    """Every ``sql/migrations/NNNN_slug.sql`` in version order, rendered for ``schema``."""
    folder = resources.files("omninode_bridge.locks").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            sql = _render(entry.read_text(encoding="utf-8"), check_schema(schema))
            found.append(Migration(int(match.group(1)), match.group(2), sql))
    return tuple(sorted(found, key=lambda m: m.version))
