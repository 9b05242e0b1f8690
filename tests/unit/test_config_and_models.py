"""Settings, validation, error registry, redaction and SQL loading (no I/O)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from omninode_bridge.core import emit_log_event
from omninode_bridge.locks import LockSettings, LockValidationError
from omninode_bridge.locks.errors import ERROR_CLASSES, LockError, error_for_code
from omninode_bridge.locks.models import check_metadata, check_name, check_ttl
from omninode_bridge.locks.queries import check_schema, load_migrations, load_queries


def test_settings_from_env_dsn_and_seed_variables() -> None:
    s = LockSettings.load({"OMNINODE_POSTGRES_DSN": "postgresql://u:pw@h/db", "OMNINODE_POOL_MAX": "7"})
    assert s.dsn == "postgresql://u:pw@h/db" and s.pool_max == 7 and not s.embedded
    assert "pw" not in s.safe_dsn() and "***" in s.safe_dsn() and "pw" not in repr(s)
    seed = LockSettings.load(
        {"POSTGRES_HOST": "db", "POSTGRES_PORT": "6543", "POSTGRES_DATABASE": "locks",
         "POSTGRES_USER": "svc", "POSTGRES_PASSWORD": "p@ss:word"}
    )  # fmt: skip
    assert seed.dsn == "postgresql://svc:p%40ss%3Aword@db:6543/locks"
    assert LockSettings.load({}).embedded


def test_settings_from_file_with_env_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "omninode.toml"
    cfg.write_text(
        '[omninode]\nschema = "from_file"\ndefault_ttl = 12\nclient_tokens = ["tok-alpha", "tok-beta"]\n'
    )
    s = LockSettings.load({"OMNINODE_CONFIG": str(cfg), "OMNINODE_DEFAULT_TTL": "20"})
    assert (s.schema, s.default_ttl, s.token_values("client")) == (
        "from_file",
        20.0,
        ("tok-alpha", "tok-beta"),
    )
    assert "tok-alpha" not in repr(s), "tokens must not show in repr"
    cfg.write_text("[omninode]\nbogus = 1\n")
    with pytest.raises(LockValidationError, match="bogus"):
        LockSettings.load({"OMNINODE_CONFIG": str(cfg)})


@pytest.mark.parametrize(
    "env",
    [
        {"OMNINODE_POOL_MAX": "many"},
        {"OMNINODE_LOCK_SCHEMA": "Robert'); DROP"},
        {"OMNINODE_DEFAULT_TTL": "0"},
        {"OMNINODE_EVENT_RETENTION": "10"},
    ],
)
def test_bad_settings_are_rejected(env: dict[str, str]) -> None:
    with pytest.raises(LockValidationError):
        LockSettings.load(env)


def test_identifiers_are_validated_before_use() -> None:
    assert check_schema("omninode_locks") == "omninode_locks"
    for bad in ("", "A", "x;drop", "a" * 41, "1abc"):
        with pytest.raises(LockValidationError):
            check_schema(bad)
    q = load_queries("my_schema")
    assert '"my_schema".acquire' in q["acquire"] and "__schema__" not in "".join(q.values())
    sql = load_migrations("my_schema")[0].sql
    assert "my_schema_grants" in sql and "__channel__" not in sql


def test_validation_helpers() -> None:
    assert check_name("ns:name") == "ns:name"
    assert check_ttl(1) == 1.0 and check_ttl(3600) == 3600.0
    with pytest.raises(LockValidationError):
        check_ttl(True)
    with pytest.raises(LockValidationError):
        check_metadata({"x": object()})
    assert check_metadata(None) == {}


def test_every_wire_code_has_one_class_under_one_base() -> None:
    expected = {
        "LOCK_HELD_BY_OTHER", "LOCK_NOT_FOUND", "LOCK_NOT_HELD", "LOCK_EXPIRED", "LOCK_TIMEOUT",
        "DEADLOCK_DETECTED", "VALIDATION_ERROR", "DATABASE_ERROR", "UNAUTHORIZED", "FORBIDDEN",
    }  # fmt: skip
    assert set(ERROR_CLASSES) == expected
    for code, cls in ERROR_CLASSES.items():
        err = error_for_code(code, "msg", lock_name="x")
        assert isinstance(err, cls) and isinstance(err, LockError)
        assert err.to_wire() == {"error_code": code, "error_message": "msg", "details": {"lock_name": "x"}}


def test_log_events_never_carry_secrets(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="omninode_bridge"):
        line = emit_log_event(
            "info",
            "connecting to postgresql://svc:hunter2@db/locks",
            {"password": "hunter2", "nested": {"api_key": "k-123"}, "dsn": "x", "lock": "ok"},
        )
    record = json.loads(line)
    assert "hunter2" not in caplog.text and "k-123" not in caplog.text
    assert record["password"] == "***" and record["nested"]["api_key"] == "***" and record["lock"] == "ok"
