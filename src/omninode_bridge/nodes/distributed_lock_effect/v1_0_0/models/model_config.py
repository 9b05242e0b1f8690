"""Node configuration: the original node's keys (postgres_*, min/max_connections,
default_lease_duration, cleanup_interval, max_acquire_attempts) plus ours."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from omninode_bridge.locks.config import LockSettings


class ModelDistributedLockConfig(BaseModel):
    # the container's config may carry other components' keys: ignore them
    model_config = ConfigDict(extra="ignore")

    postgres_host: str | None = None
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    postgres_database: str = "postgres"
    postgres_user: str = "postgres"
    postgres_password: SecretStr | None = None
    dsn: SecretStr | None = Field(default=None, description="Overrides the postgres_* keys.")
    schema_name: str | None = Field(default=None, alias="schema")
    min_connections: int = Field(default=2, ge=1, le=1000)
    max_connections: int = Field(default=10, ge=1, le=1000)
    default_lease_duration: float = Field(default=30.0, ge=1, le=3600)
    cleanup_interval: float = Field(default=60.0, gt=0)
    max_acquire_attempts: int = Field(default=3, ge=1, le=10)
    acquire_retry_delay: float = Field(default=0.1, ge=0, le=60)

    def database_dsn(self) -> str | None:
        """The DSN from ``dsn`` or the postgres_* keys; None means environment / embedded."""
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        if self.postgres_host is None:
            return None
        user = quote(self.postgres_user, safe="")
        password = self.postgres_password.get_secret_value() if self.postgres_password else None
        auth = f"{user}:{quote(password, safe='')}" if password else user
        database = quote(self.postgres_database, safe="")
        return f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/{database}"

    def settings(self) -> LockSettings:
        overrides: dict[str, Any] = {
            "pool_min": min(self.min_connections, self.max_connections),
            "pool_max": self.max_connections,
            "default_ttl": self.default_lease_duration,
            "cleanup_interval": self.cleanup_interval,
            "schema": self.schema_name,
            "dsn": self.database_dsn(),
        }
        return LockSettings.load(**overrides)
