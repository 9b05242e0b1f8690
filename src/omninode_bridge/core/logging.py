"""Structured logging in the ONEX style: ``emit_log_event(level, message, context)``.

Every event is one JSON object on the ``omninode_bridge`` logger. Values under keys
that look like secrets, and passwords inside DSNs, are redacted before anything is
formatted, so a secret cannot reach a log line by accident.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

_LOGGER = logging.getLogger("omninode_bridge")
_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|dsn|authorization|api[_-]?key)", re.I)
_DSN_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)", re.I)
REDACTED = "***"


class LogLevel(str, Enum):
    """Levels understood by :func:`emit_log_event`."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def redact_text(text: str) -> str:
    """Hide the password part of any URL-style DSN inside ``text``."""
    return _DSN_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", text)


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
    if isinstance(value, str):
        return redact_text(value)
    return value


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
