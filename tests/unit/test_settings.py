"""Settings: precedence of the sources, errors that name source and value, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from omninode_bridge.locks import LockSettings, LockValidationError
from omninode_bridge.locks.config import default_data_dir


def _file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "omninode.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_precedence_arguments_over_env_over_dotenv_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = _file(
        tmp_path,
        '[omninode]\npool_max = 20\ndefault_ttl = 11\ncleanup_interval = 7\nkafka_topic_prefix = "file"\n',
    )
    dotenv = tmp_path / ".env"
    dotenv.write_text("OMNINODE_POOL_MAX=30\nOMNINODE_DEFAULT_TTL=12\nOMNINODE_CLEANUP_INTERVAL=8\n")
    env = {"OMNINODE_CONFIG": str(cfg), "OMNINODE_POOL_MAX": "40", "OMNINODE_DEFAULT_TTL": "13"}
    s = LockSettings.load(env, env_file=dotenv, pool_max=50)
    assert s.pool_max == 50  # argument
    assert s.default_ttl == 13.0  # environment beats .env and file
    assert s.cleanup_interval == 8.0  # .env beats file
    assert s.kafka_topic_prefix == "file"  # file beats default
    assert s.recheck_interval == 2.0  # default
    assert s.schema == "omninode_locks"


def test_config_file_may_be_named_in_dotenv(tmp_path: Path) -> None:
    cfg = _file(tmp_path, '[omninode]\nschema = "from_file"\n')
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"OMNINODE_CONFIG={cfg}\n")
    assert LockSettings.load({}, env_file=dotenv).schema == "from_file"


def test_direct_construction_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNINODE_POOL_MAX", "0")
    monkeypatch.setenv("OMNINODE_POSTGRES_DSN", "postgresql://u:pw@h/db")
    s = LockSettings(schema="abc", pool_min=1, pool_max=10, recheck_interval=1.0, cleanup_interval=3600)
    assert (s.schema, s.pool_max, s.dsn, s.embedded) == ("abc", 10, None, True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OMNINODE_POOL_MAX": "0"}, "pool_max='0' (from environment variable OMNINODE_POOL_MAX)"),
        ({"OMNINODE_POOL_MAX": "many"}, "pool_max='many' (from environment variable OMNINODE_POOL_MAX)"),
        ({"OMNINODE_DEFAULT_TTL": "0"}, "default_ttl='0' (from environment variable OMNINODE_DEFAULT_TTL)"),
        ({"OMNINODE_EVENT_RETENTION": "10"}, "event_retention='10' (from environment variable"),
        ({"OMNINODE_LOCK_SCHEMA": "Robert'); DROP"}, "(from environment variable OMNINODE_LOCK_SCHEMA)"),
        (
            {"OMNINODE_POOL_MIN": "5", "OMNINODE_POOL_MAX": "3"},
            "pool_min='5' (from environment variable OMNINODE_POOL_MIN), "
            "pool_max='3' (from environment variable OMNINODE_POOL_MAX)",
        ),
    ],
)
def test_invalid_env_value_names_variable_and_value(env: dict[str, str], expected: str) -> None:
    with pytest.raises(LockValidationError) as caught:
        LockSettings.load(env, env_file=None)
    assert expected in caught.value.message
    assert str(caught.value).startswith("VALIDATION_ERROR: ")


def test_invalid_file_value_names_path_and_key(tmp_path: Path) -> None:
    cfg = _file(tmp_path, "[omninode]\npool_max = -3\n")
    with pytest.raises(LockValidationError) as caught:
        LockSettings.load({"OMNINODE_CONFIG": str(cfg)}, env_file=None)
    assert f"pool_max=-3 (from config file {cfg} [omninode] key 'pool_max')" in caught.value.message


def test_invalid_dotenv_value_names_its_path(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("OMNINODE_RECHECK_INTERVAL=-1\n")
    with pytest.raises(LockValidationError) as caught:
        LockSettings.load({}, env_file=dotenv)
    assert (
        f"recheck_interval='-1' (from {dotenv.resolve()} (OMNINODE_RECHECK_INTERVAL))" in caught.value.message
    )


def test_unknown_file_keys_are_rejected_by_name(tmp_path: Path) -> None:
    cfg = _file(tmp_path, "[omninode]\nbogus = 1\npool_max = 3\n")
    with pytest.raises(LockValidationError) as caught:
        LockSettings.load({"OMNINODE_CONFIG": str(cfg)}, env_file=None)
    assert f"unknown setting 'bogus' (from config file {cfg} [omninode] key 'bogus')" in caught.value.message


def test_unreadable_or_malformed_config_file(tmp_path: Path) -> None:
    with pytest.raises(LockValidationError, match=r"cannot read config file .*missing\.toml"):
        LockSettings.load({"OMNINODE_CONFIG": str(tmp_path / "missing.toml")}, env_file=None)
    cfg = _file(tmp_path, "[omninode\n")
    with pytest.raises(LockValidationError, match="is not valid TOML"):
        LockSettings.load({"OMNINODE_CONFIG": str(cfg)}, env_file=None)


def test_secret_values_are_never_in_errors() -> None:
    with pytest.raises(LockValidationError) as caught:
        LockSettings.load(
            {
                "OMNINODE_POSTGRES_DSN": "postgresql://svc:hunter2@db:99999/locks",
                "OMNINODE_CLIENT_TOKENS": "tok",
            },
            env_file=None,
        )
    text = caught.value.message
    assert "hunter2" not in text and "'postgresql://svc:***@db:99999/locks'" in text
    assert "port '99999' is not a number from 1 to 65535" in text
    with pytest.raises(LockValidationError) as caught:
        LockSettings.load({"OMNINODE_ADMIN_TOKENS": "s3cr3t-token", "OMNINODE_POOL_MAX": "x"}, env_file=None)
    assert "s3cr3t-token" not in caught.value.message


def test_seed_variables_build_the_dsn_and_lose_to_the_omninode_dsn() -> None:
    seed = {
        "POSTGRES_HOST": "db",
        "POSTGRES_PORT": "6543",
        "POSTGRES_DATABASE": "locks",
        "POSTGRES_USER": "svc",
        "POSTGRES_PASSWORD": "p@ss:word",
    }
    s = LockSettings.load(seed, env_file=None)
    assert s.dsn == "postgresql://svc:p%40ss%3Aword@db:6543/locks"
    assert "p@ss" not in repr(s) and "p%40ss" not in repr(s)
    both = LockSettings.load({**seed, "OMNINODE_POSTGRES_DSN": "postgresql://other@h/x"}, env_file=None)
    assert both.dsn == "postgresql://other@h/x"
    with pytest.raises(LockValidationError, match=r"from environment variable POSTGRES_HOST/POSTGRES_PORT"):
        LockSettings.load({"POSTGRES_HOST": "db", "POSTGRES_PORT": "70000"}, env_file=None)


def test_secrets_are_secretstr_and_dsn_is_a_plain_string(tmp_path: Path) -> None:
    cfg = _file(tmp_path, '[omninode]\nclient_tokens = ["tok-alpha", "tok-beta"]\n')
    s = LockSettings.load(
        {
            "OMNINODE_CONFIG": str(cfg),
            "OMNINODE_ADMIN_TOKENS": " adm-1 , ,adm-2",
            "OMNINODE_POSTGRES_DSN": "host=h password=pw9x",
        },
        env_file=None,
    )
    assert all(isinstance(t, SecretStr) for t in (*s.client_tokens, *s.admin_tokens))
    assert s.token_values("client") == ("tok-alpha", "tok-beta")
    assert s.token_values("admin") == ("adm-1", "adm-2")
    assert isinstance(s.dsn, str) and s.dsn == "host=h password=pw9x"
    assert isinstance(s.postgres_dsn, SecretStr)
    for text in (repr(s), str(s), s.safe_dsn(), str(s.model_dump())):
        assert "tok-alpha" not in text and "adm-1" not in text and "pw9x" not in text


def test_replace_and_with_dsn_validate() -> None:
    s = LockSettings(pool_max=4)
    assert s.with_dsn("postgresql://u@h/db").dsn == "postgresql://u@h/db"
    assert s.replace(pool_min=1, pool_max=2).pool_max == 2
    with pytest.raises(LockValidationError, match=r"pool_max=0 .*argument pool_max"):
        s.replace(pool_max=0)
    with pytest.raises(LockValidationError, match="unknown setting 'bogus'"):
        LockSettings(bogus=1)  # type: ignore[call-arg]


def test_default_data_dir_is_per_user_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == str(tmp_path / "xdg" / "omninode-bridge" / "pgdata")
    assert LockSettings.load({}, env_file=None).data_dir == default_data_dir()
    assert LockSettings.load({"OMNINODE_DATA_DIR": "/srv/pg"}, env_file=None).data_dir == "/srv/pg"
    assert LockSettings.load({}, env_file=None).safe_dsn() == f"embedded:{default_data_dir()}"
