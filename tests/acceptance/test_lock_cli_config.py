"""``omninode-lock`` configuration as a user meets it: DSN forms, settings errors, no secrets."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from omninode_bridge.core.dsn import parse_dsn

CLI = str(Path(sys.executable).with_name("omninode-lock"))
SECRET = "Sekr1tPW"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def cli(*args: str, env: dict[str, str], cwd: Path, limit_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """No database configured; home and data folders in tmp (never the real user's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNINODE_", "POSTGRES_", "PG", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "xdg"), COLUMNS="200")
    return env


def _one_clean_error_line(code: int, out: str, err: str, fragments: list[str]) -> str:
    assert code != 0
    for fragment in fragments:
        assert fragment not in out + err, f"{fragment!r} leaked: {out + err!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("omninode-lock: error: ")
    return lines[0]


PORT = _closed_port()
FORMS = [
    (
        f"postgresql://bob:{SECRET}@127.0.0.1:{PORT}/locks",
        [SECRET],
        f"connection refused by 127.0.0.1:{PORT}",
    ),
    (f"postgres://bob:{SECRET}@127.0.0.1:{PORT}/locks", [SECRET], f"connection refused by 127.0.0.1:{PORT}"),
    (f"postgresql://bob@127.0.0.1:{PORT}/locks?password={SECRET}", [SECRET], "connection refused"),
    (f"host=127.0.0.1 port={PORT} user=bob password={SECRET}", [SECRET], "connection refused"),
    (f"host=127.0.0.1 port={PORT} user=bob password='Sekr1t PW9'", ["Sekr1t", "PW9"], "connection refused"),
    (f"postgresql://:{SECRET}@127.0.0.1:{PORT}/locks", [SECRET], "connection refused"),
    (f"postgresql://bob:Sekr1t@PW9@127.0.0.1:{PORT}/locks", ["Sekr1t", "PW9"], "unencoded '@'"),
    (f"postgresql://bob:Sekr%401tPW@127.0.0.1:{PORT}/locks", ["Sekr%401tPW", "Sekr@1tPW", "1tPW"], "refused"),
    (f"postgresql://bob:{SECRET}@127.0.0.1:99999/locks", [SECRET], "port '99999' is not a number"),
    (f"postgresql://bob:{SECRET}@nosuchhost.invalid/locks", [SECRET], "host not found: 'nosuchhost.invalid'"),
]


@pytest.mark.parametrize(("dsn", "fragments", "expected"), FORMS)
async def test_every_dsn_form_fails_in_one_line_without_its_password(
    dsn: str, fragments: list[str], expected: str, user_env: dict[str, str], tmp_path: Path
) -> None:
    code, out, err = await cli("--dsn", dsn, "status", env=user_env, cwd=tmp_path, limit_s=30)
    line = _one_clean_error_line(code, out, err, fragments)
    assert expected in line


async def test_invalid_pool_setting_is_not_hidden(user_env: dict[str, str], tmp_path: Path) -> None:
    env = {**user_env, "OMNINODE_POOL_MAX": "0"}
    code, out, err = await cli("status", env=env, cwd=tmp_path)
    line = _one_clean_error_line(code, out, err, [])
    assert (
        "VALIDATION_ERROR: invalid setting pool_max='0' (from environment variable OMNINODE_POOL_MAX)" in line
    )
    assert not (tmp_path / "xdg").exists(), "no embedded server may start on invalid settings"


async def test_config_file_errors_name_the_file(user_env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "omninode.toml"
    cfg.write_text("[omninode]\npool_size = 5\n")
    code, out, err = await cli("status", env={**user_env, "OMNINODE_CONFIG": str(cfg)}, cwd=tmp_path)
    line = _one_clean_error_line(code, out, err, [])
    assert f"unknown setting 'pool_size' (from config file {cfg} [omninode] key 'pool_size')" in line


async def test_dotenv_in_the_working_directory_is_read(user_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"POSTGRES_HOST=127.0.0.1\nPOSTGRES_PORT={PORT}\nPOSTGRES_PASSWORD={SECRET}\n"
    )
    code, out, err = await cli("status", env=user_env, cwd=tmp_path)
    line = _one_clean_error_line(code, out, err, [SECRET])
    assert f"connection refused by 127.0.0.1:{PORT}" in line


async def test_keyword_dsn_with_password_works_and_is_shown_redacted(
    dsn: str, user_env: dict[str, str], tmp_path: Path
) -> None:
    """A working keyword-form DSN (the password is ignored by trust auth) is never echoed."""
    keyword = make_conninfo(**{**parse_dsn(dsn), "password": f"{SECRET} x"})
    code, out, err = await cli(
        "--dsn", keyword, "--schema", "omninode_cfg_cli", "migrate", env=user_env, cwd=tmp_path
    )
    assert code == 0, err
    assert "password=***" in out and SECRET not in out + err
    code, out, err = await cli(
        "--dsn", keyword, "--schema", "omninode_cfg_cli", "status", env=user_env, cwd=tmp_path
    )
    assert code == 0, err
    assert "active locks: 0" in out and SECRET not in out + err


async def test_help_lists_every_setting_and_its_variable(user_env: dict[str, str], tmp_path: Path) -> None:
    from omninode_bridge.locks.config import ENV_VARS, LockSettings

    code, out, _ = await cli("--help", env=user_env, cwd=tmp_path)
    assert code == 0
    for name, var in ENV_VARS.items():
        assert f"{var} " in out and f" {name}" in out
    public = {f.alias or n for n, f in LockSettings.model_fields.items()}
    assert public == set(ENV_VARS), "every setting has a documented variable"
