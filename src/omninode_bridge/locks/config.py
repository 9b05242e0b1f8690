"""Settings, typed and validated by pydantic-settings.

Sources, highest precedence first: explicit arguments (``LockSettings.load(**overrides)``,
the CLI's ``--dsn``/``--schema``) > environment > ``.env`` file > the TOML file named by
``OMNINODE_CONFIG`` (its ``[omninode]`` table) > defaults. Constructing
``LockSettings(...)`` directly reads no source at all: only what it is given.

An invalid value raises :class:`LockValidationError` naming the setting, where it came
from (environment variable, ``.env`` path, config file path and key, argument) and the
value, except for secrets (the DSN is shown with its password hidden; tokens not at all).
With neither ``OMNINODE_POSTGRES_DSN`` nor the seed-compatible ``POSTGRES_HOST`` set, the
engine uses an embedded PostgreSQL in ``data_dir``: one per user and machine.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from omninode_bridge.core.dsn import DsnError, build_url, check_dsn, redact_dsn, remember_secrets
from omninode_bridge.locks.errors import LockValidationError
from omninode_bridge.locks.queries import check_schema

APP_NAME = "omninode-bridge"

# Public setting name -> environment variable (the names the README documents).
ENV_VARS: dict[str, str] = {
    "dsn": "OMNINODE_POSTGRES_DSN",
    "listen_dsn": "OMNINODE_LISTEN_DSN",
    "statement_cache_size": "OMNINODE_STATEMENT_CACHE_SIZE",
    "schema": "OMNINODE_LOCK_SCHEMA",
    "pool_min": "OMNINODE_POOL_MIN",
    "pool_max": "OMNINODE_POOL_MAX",
    "default_ttl": "OMNINODE_DEFAULT_TTL",
    "cleanup_interval": "OMNINODE_CLEANUP_INTERVAL",
    "recheck_interval": "OMNINODE_RECHECK_INTERVAL",
    "event_retention": "OMNINODE_EVENT_RETENTION",
    "lock_idle_retention": "OMNINODE_LOCK_IDLE_RETENTION",
    "connect_timeout": "OMNINODE_CONNECT_TIMEOUT",
    "data_dir": "OMNINODE_DATA_DIR",
    "kafka_bootstrap_servers": "OMNINODE_KAFKA_BOOTSTRAP_SERVERS",
    "kafka_topic_prefix": "OMNINODE_KAFKA_TOPIC_PREFIX",
    "client_tokens": "OMNINODE_CLIENT_TOKENS",
    "admin_tokens": "OMNINODE_ADMIN_TOKENS",
}
SEED_VARS = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DATABASE", "POSTGRES_USER", "POSTGRES_PASSWORD")
CONFIG_VAR = "OMNINODE_CONFIG"
_HIDDEN = {"client_tokens", "admin_tokens"}


def default_data_dir() -> str:
    """The per-user embedded PostgreSQL folder: ``<user data dir>/omninode-bridge/pgdata``.

    platformdirs' user data dir (``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux,
    ``~/Library/Application Support`` on macOS); never the current directory.
    """
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - the [embedded] extra brings platformdirs
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return str(Path(base) / APP_NAME / "pgdata")
    return str(Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "pgdata")


@dataclass
class _Layer:
    """One configuration source: values by public name and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)


_LOADING: ContextVar[tuple[_Layer, ...] | None] = ContextVar("omninode_settings_layers", default=None)
_PROVENANCE: ContextVar[dict[str, str] | None] = ContextVar("omninode_settings_where", default=None)


class _LayerSource(PydanticBaseSettingsSource):
    """A pydantic-settings source over one already-read :class:`_Layer`."""

    def __init__(self, settings_cls: type[BaseSettings], layer: _Layer) -> None:
        super().__init__(settings_cls)
        self.layer = layer

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        key = field.alias or field_name
        return self.layer.values.get(key), key, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.layer.values)


class LockSettings(BaseSettings):
    """Everything the engine and service read from configuration.

    ``dsn`` and ``schema`` are read-only properties over the fields ``postgres_dsn``
    (a :class:`SecretStr`) and ``lock_schema``; pass them as ``dsn=`` and ``schema=``.
    ``client_tokens`` and ``admin_tokens`` are tuples of :class:`SecretStr`.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    postgres_dsn: SecretStr | None = Field(default=None, alias="dsn")
    # A direct connection for LISTEN when ``dsn`` goes through a transaction pooler
    # (PgBouncer's pool_mode=transaction cannot carry LISTEN); same server as ``dsn``.
    postgres_listen_dsn: SecretStr | None = Field(default=None, alias="listen_dsn")
    # asyncpg's named prepared-statement cache per connection; 0 turns it off (needed
    # behind PgBouncer < 1.21 in transaction mode: unnamed statements only).
    statement_cache_size: int = Field(default=100, ge=0, le=10000)
    lock_schema: str = Field(default="omninode_locks", alias="schema")
    pool_min: int = Field(default=2, ge=1, le=1000)
    pool_max: int = Field(default=10, ge=1, le=1000)
    default_ttl: float = Field(default=30.0, ge=1, le=3600)
    cleanup_interval: float = Field(default=5.0, gt=0)
    recheck_interval: float = Field(default=2.0, gt=0)
    event_retention: float = Field(default=86400.0, ge=60)
    lock_idle_retention: float = Field(default=3600.0, ge=60)
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    data_dir: str = Field(default_factory=default_data_dir, min_length=1)
    kafka_bootstrap_servers: str | None = None
    kafka_topic_prefix: str = "dev.omninode-bridge"
    client_tokens: tuple[SecretStr, ...] = ()
    admin_tokens: tuple[SecretStr, ...] = ()

    # -- validation -------------------------------------------------------------------

    @field_validator("postgres_dsn", "postgres_listen_dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            dsn = value.get_secret_value()
            remember_secrets(dsn)
            try:
                check_dsn(dsn)
            except DsnError as err:
                raise ValueError(f"invalid DSN: {err.reason}") from None
        return value

    @field_validator("lock_schema")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        try:
            return check_schema(value)
        except LockValidationError as err:
            raise ValueError(err.message) from None

    @field_validator("client_tokens", "admin_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        """``"a,b"`` (environment) or a list (TOML); blanks dropped."""
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            return tuple(
                t.strip() if isinstance(t, str) else t
                for t in items
                if not (isinstance(t, str) and not t.strip())
            )
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> LockSettings:
        if self.pool_min > self.pool_max:
            raise ValueError("pool_min must not exceed pool_max")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _explain(cls, data: Any, handler: Any) -> Any:
        """Turn pydantic's errors into one :class:`LockValidationError` naming the source.

        Declared last so that it wraps every other validator."""
        try:
            return handler(data)
        except ValidationError as err:
            given = data if isinstance(data, Mapping) else {}
            where = _PROVENANCE.get()
            if where is None:  # constructed directly: every value is an argument
                where = {str(k): f"argument {k}" for k in given}
            raise LockValidationError(_describe(err, given, where), field=_first_loc(err)) from None

    # -- sources ------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first; the environment, ``.env`` and the file only inside :meth:`load`."""
        layers = _LOADING.get()
        if layers is None:
            return (init_settings,)
        return (init_settings, *(_LayerSource(settings_cls, layer) for layer in layers))

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        env_file: str | Path | None = ".env",
        **overrides: Any,
    ) -> LockSettings:
        """Settings from ``overrides`` > ``env`` (default ``os.environ``) > ``env_file`` > config file.

        ``None`` overrides are ignored (so a CLI can pass its unset options through).
        """
        environ = os.environ if env is None else env
        dotenv = _read_dotenv(env_file)
        config_path = environ.get(CONFIG_VAR) or dotenv.values.get(CONFIG_VAR)
        layers = (
            _env_layer(environ, "environment variable {var}"),
            _env_layer(dotenv.values, f"{dotenv.where.get('path', '.env')} ({{var}})"),
            _file_layer(Path(config_path)) if config_path else _Layer(),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        where: dict[str, str] = {}
        for layer in reversed(layers):
            where.update(layer.where)
        where.update({k: f"argument {k}" for k in given})
        token_layers = _LOADING.set(layers)
        token_where = _PROVENANCE.set(where)
        try:
            return cls(**given)
        finally:
            _LOADING.reset(token_layers)
            _PROVENANCE.reset(token_where)

    # -- use ----------------------------------------------------------------------------

    @property
    def dsn(self) -> str | None:
        """The DSN as a plain string (for the driver); never log it, use :meth:`safe_dsn`."""
        return None if self.postgres_dsn is None else self.postgres_dsn.get_secret_value()

    @property
    def listen_dsn(self) -> str | None:
        """The DSN for LISTEN connections when set apart from :attr:`dsn` (never log it)."""
        return None if self.postgres_listen_dsn is None else self.postgres_listen_dsn.get_secret_value()

    @property
    def schema(self) -> str:  # type: ignore[override]  # BaseModel.schema() is pydantic v1's
        return self.lock_schema

    @property
    def embedded(self) -> bool:
        """True when no database is configured and an embedded PostgreSQL is used."""
        return self.postgres_dsn is None

    def safe_dsn(self) -> str:
        """The DSN with any password hidden, for logs and messages."""
        dsn = self.dsn
        return redact_dsn(dsn) if dsn else f"embedded:{self.data_dir}"

    def replace(self, **changes: Any) -> LockSettings:
        """A validated copy with ``changes`` (public names: ``dsn``, ``schema``, ``pool_max``...)."""
        return type(self).model_validate({**self.model_dump(by_alias=True), **changes})

    def with_dsn(self, dsn: str) -> LockSettings:
        return self.replace(dsn=dsn)

    def token_values(self, role: str) -> tuple[str, ...]:
        """The plain bearer tokens of ``role`` (``"client"`` or ``"admin"``), for comparison."""
        tokens = {"client": self.client_tokens, "admin": self.admin_tokens}[role]
        return tuple(t.get_secret_value() for t in tokens)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "postgres_dsn":
                yield "dsn", self.safe_dsn() if value is not None else None
            elif name == "postgres_listen_dsn":
                yield "listen_dsn", None if self.listen_dsn is None else redact_dsn(self.listen_dsn)
            elif name == "lock_schema":
                yield "schema", value
            else:
                yield name, value


# -- reading the sources ----------------------------------------------------------------


def _env_layer(environ: Mapping[str, str], label: str) -> _Layer:
    """The ``OMNINODE_*`` variables, and the seed ``POSTGRES_*`` ones as a DSN."""
    layer = _Layer()
    for name, var in ENV_VARS.items():
        value = environ.get(var)
        if value:  # an empty variable counts as unset
            layer.values[name] = value
            layer.where[name] = label.format(var=var)
    if "dsn" not in layer.values and environ.get("POSTGRES_HOST"):
        layer.values["dsn"] = build_url(
            {
                "user": environ.get("POSTGRES_USER") or "postgres",
                **({"password": environ["POSTGRES_PASSWORD"]} if environ.get("POSTGRES_PASSWORD") else {}),
                "host": environ["POSTGRES_HOST"],
                "port": environ.get("POSTGRES_PORT") or "5432",
                "dbname": environ.get("POSTGRES_DATABASE") or "postgres",
            }
        )
        layer.where["dsn"] = label.format(var="/".join(SEED_VARS))
    return layer


def _read_dotenv(path: str | Path | None) -> _Layer:
    """The ``.env`` file's variables (``where['path']`` is its absolute path)."""
    if path is None or not Path(path).is_file():
        return _Layer()
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    return _Layer(values, {"path": str(Path(path).resolve())})


def _file_layer(path: Path) -> _Layer:
    """The ``[omninode]`` table of the TOML file (or its top level when it has none)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LockValidationError(
            f"cannot read config file {path} (named by {CONFIG_VAR}): {err.strerror}", field=CONFIG_VAR
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise LockValidationError(f"config file {path} is not valid TOML: {err}", field=CONFIG_VAR) from None
    section = data.get("omninode", data)
    if not isinstance(section, dict):
        raise LockValidationError(f"config file {path}: [omninode] must be a table", field=CONFIG_VAR)
    table = "[omninode] " if "omninode" in data else ""
    return _Layer(dict(section), {key: f"config file {path} {table}key {key!r}" for key in section})


# -- error messages ---------------------------------------------------------------------


def _first_loc(err: ValidationError) -> str:
    errors = err.errors()
    return str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else "settings"


def _shown(name: str, value: Any) -> str:
    """A value as a message may show it: DSNs redacted, tokens hidden."""
    if name in _HIDDEN:
        return "(hidden)"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if name in ("dsn", "listen_dsn") and isinstance(value, str):
        return repr(redact_dsn(value))
    return repr(value)


def _describe(err: ValidationError, given: Mapping[str, Any], where: Mapping[str, str]) -> str:
    """One line per problem: ``invalid setting NAME=VALUE (from SOURCE): REASON``."""
    lines: list[str] = []
    for problem in err.errors(include_url=False):
        loc = problem["loc"]
        reason = problem["msg"].removeprefix("Value error, ")
        if not loc:  # a rule across fields: name each one mentioned with its source
            involved = [n for n in ENV_VARS if n in reason]
            parts = [f"{n}={_shown(n, given.get(n))} (from {where.get(n, 'default')})" for n in involved]
            lines.append(f"invalid settings: {reason}" + (f": {', '.join(parts)}" if parts else ""))
            continue
        name = str(loc[0])
        if problem["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r} (from {where.get(name, 'argument ' + name)})")
            continue
        lines.append(
            f"invalid setting {name}={_shown(name, given.get(name))} (from {where.get(name, 'default')}): {reason}"
        )
    return "; ".join(lines)
