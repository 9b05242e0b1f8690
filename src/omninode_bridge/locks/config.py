"""Settings from the environment and an optional TOML config file.

Precedence: explicit arguments > environment > config file (``OMNINODE_CONFIG``) >
defaults. With neither ``OMNINODE_POSTGRES_DSN`` nor ``POSTGRES_HOST`` set, the
service uses an embedded PostgreSQL under ``OMNINODE_DATA_DIR``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from omninode_bridge.core.logging import redact_text
from omninode_bridge.locks.errors import LockValidationError
from omninode_bridge.locks.queries import check_schema

_ENV = {
    "dsn": "OMNINODE_POSTGRES_DSN",
    "schema": "OMNINODE_LOCK_SCHEMA",
    "pool_min": "OMNINODE_POOL_MIN",
    "pool_max": "OMNINODE_POOL_MAX",
    "default_ttl": "OMNINODE_DEFAULT_TTL",
    "cleanup_interval": "OMNINODE_CLEANUP_INTERVAL",
    "recheck_interval": "OMNINODE_RECHECK_INTERVAL",
    "event_retention": "OMNINODE_EVENT_RETENTION",
    "lock_idle_retention": "OMNINODE_LOCK_IDLE_RETENTION",
    "data_dir": "OMNINODE_DATA_DIR",
    "kafka_bootstrap_servers": "OMNINODE_KAFKA_BOOTSTRAP_SERVERS",
    "kafka_topic_prefix": "OMNINODE_KAFKA_TOPIC_PREFIX",
    "client_tokens": "OMNINODE_CLIENT_TOKENS",
    "admin_tokens": "OMNINODE_ADMIN_TOKENS",
}


@dataclass(frozen=True)
class LockSettings:
    """Everything the engine and service read from configuration."""

    dsn: str | None = field(default=None, repr=False)
    schema: str = "omninode_locks"
    pool_min: int = 2
    pool_max: int = 10
    default_ttl: float = 30.0
    cleanup_interval: float = 5.0
    recheck_interval: float = 2.0
    event_retention: float = 86400.0
    lock_idle_retention: float = 3600.0
    data_dir: str = ".omninode/pgdata"
    kafka_bootstrap_servers: str | None = None
    kafka_topic_prefix: str = "dev.omninode-bridge"
    client_tokens: tuple[str, ...] = field(default=(), repr=False)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        check_schema(self.schema)
        if not 1 <= self.pool_min <= self.pool_max <= 1000:
            raise LockValidationError("need 1 <= pool_min <= pool_max <= 1000")
        if not 1 <= self.default_ttl <= 3600:
            raise LockValidationError("default_ttl must be within 1..3600 seconds")
        if min(self.cleanup_interval, self.recheck_interval) <= 0:
            raise LockValidationError("cleanup_interval and recheck_interval must be > 0")
        if min(self.event_retention, self.lock_idle_retention) < 60:
            raise LockValidationError("event_retention and lock_idle_retention must be >= 60 seconds")

    @property
    def embedded(self) -> bool:
        """True when no database is configured and an embedded PostgreSQL is used."""
        return self.dsn is None

    def safe_dsn(self) -> str:
        """The DSN with any password hidden, for logs and messages."""
        return redact_text(self.dsn) if self.dsn else f"embedded:{self.data_dir}"

    def with_dsn(self, dsn: str) -> LockSettings:
        return replace(self, dsn=dsn)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LockSettings:
        """Build settings from ``env`` (default ``os.environ``), the config file and overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        config_path = env.get("OMNINODE_CONFIG")
        if config_path:
            values.update(_read_file(Path(config_path)))
        for key, var in _ENV.items():
            if env.get(var):
                values[key] = env[var]
        if "dsn" not in values:
            dsn = _dsn_from_parts(env)
            if dsn:
                values["dsn"] = dsn
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(values))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise LockValidationError(f"cannot read config file {path}: {err}") from err
    section = data.get("omninode", data)
    known = {f.name for f in fields(LockSettings)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise LockValidationError(f"unknown keys in {path}: {', '.join(unknown)}")
    return dict(section)


def _dsn_from_parts(env: Mapping[str, str]) -> str | None:
    """The seed-compatible POSTGRES_HOST/PORT/DATABASE/USER/PASSWORD variables as a DSN."""
    host = env.get("POSTGRES_HOST")
    if not host:
        return None
    user = quote(env.get("POSTGRES_USER", "postgres"), safe="")
    password = env.get("POSTGRES_PASSWORD")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    port = env.get("POSTGRES_PORT", "5432")
    database = quote(env.get("POSTGRES_DATABASE", "postgres"), safe="")
    return f"postgresql://{auth}@{host}:{port}/{database}"


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(LockSettings)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = str(types.get(key, ""))
        try:
            if kind == "int":
                out[key] = int(value)
            elif kind == "float":
                out[key] = float(value)
            elif kind.startswith("tuple"):
                items = value.split(",") if isinstance(value, str) else list(value)
                out[key] = tuple(t.strip() for t in items if t.strip())
            else:
                out[key] = value
        except (TypeError, ValueError) as err:
            raise LockValidationError(f"setting {key!r} has an invalid value") from err
    return out
