"""Structured logging in the ONEX style: ``emit_log_event(level, message, context)``.

Every event is one JSON object on the ``omninode_bridge`` logger. Values under keys
that look like secrets, and passwords inside DSNs (URL or keyword form, parsed by
:mod:`omninode_bridge.core.dsn`), are redacted before anything is
formatted, so a secret cannot reach a log line by accident.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

from omninode_bridge.core.dsn import REDACTED, redact_dsn, redact_text

__all__ = ["REDACTED", "LogLevel", "emit_log_event", "redact", "redact_text"]

_LOGGER = logging.getLogger("omninode_bridge")
_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|authorization|api[_-]?key|credential)", re.I)
# values that are whole connection strings: parsed as one DSN (the conservative fallback
# then covers forms a search inside free text could cut short, e.g. a space in a password)
_DSN_KEYS = re.compile(r"(dsn|conninfo|database_url|db_url)", re.I)


class LogLevel(str, Enum):
    """Levels understood by :func:`emit_log_event`."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def redact(value: Any, key: str = "") -> Any:
    """Return ``value`` with secrets replaced by ``***`` (recursively for mappings/lists)."""
    if (
        key
        and _SECRET_KEYS.search(key)
        and value is not None
        and not isinstance(value, (Mapping, list, tuple))
    ):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if key and _DSN_KEYS.search(key) and isinstance(value, str):
        return redact_text(redact_dsn(value))
    # strings, and anything JSON would turn into one (an exception's text may quote a DSN)
    return redact_text(value if isinstance(value, str) else str(value))


def emit_log_event(
    level: LogLevel | str,
    message: str,
    context: Mapping[str, Any] | None = None,
    *,
    logger: logging.Logger | None = None,
) -> str:
    """Log one structured event and return the JSON line that was logged."""
    lvl = LogLevel(level.upper() if isinstance(level, str) else level.value)
    record = {"level": lvl.value, "message": redact_text(message), **redact(dict(context or {}))}
    line = json.dumps(record, default=str, sort_keys=True)
    (logger or _LOGGER).log(getattr(logging, lvl.value), line)
    return line
