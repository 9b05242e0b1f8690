"""Passwords never leak: every DSN form through redaction, logs, settings and error mapping."""

from __future__ import annotations

import json
import logging
import socket

import asyncpg
import pytest

from omninode_bridge.core import emit_log_event
from omninode_bridge.core.dsn import DsnError, check_dsn, parse_dsn, redact_dsn, redact_text, to_url
from omninode_bridge.locks import LockSettings, LockValidationError
from omninode_bridge.locks.errors import LockDatabaseError
from omninode_bridge.locks.pool import connect_error

# (DSN, fragments of its password that must never be shown)
FORMS = [
    ("postgresql://bob:Sekr1tPW@db.example:5432/locks", ["Sekr1tPW"]),
    ("postgres://bob:Sekr1tPW@db.example/locks", ["Sekr1tPW"]),
    ("postgresql://bob@db.example/locks?sslmode=disable&password=Sekr1tPW", ["Sekr1tPW"]),
    ("host=db.example user=bob password=Sekr1tPW dbname=locks", ["Sekr1tPW"]),
    ("host=db.example user=bob password='Sekr1t PW9' dbname=locks", ["Sekr1t PW9", "Sekr1t", "PW9"]),
    ("postgresql://:Sekr1tPW@db.example/locks", ["Sekr1tPW"]),
    ("postgresql://bob:Sekr1t@PW9@db.example/locks", ["Sekr1t@PW9", "Sekr1t", "PW9"]),
    ("postgresql://bob:Sekr%401tPW@db.example/locks", ["Sekr%401tPW", "Sekr@1tPW", "1tPW"]),
    ("postgresql://bob:Sekr1t%20PW9@db.example/locks", ["Sekr1t%20PW9", "Sekr1t PW9", "Sekr1t"]),
]
IDS = ["url", "postgres-scheme", "query-password", "keyword", "quoted-space", "empty-user", "unencoded-at",
       "percent-encoded", "encoded-space"]  # fmt: skip


def _clean(text: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment not in text, f"{fragment!r} leaked in {text!r}"


@pytest.fixture
def nothing_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redaction must work from the text alone, not from passwords remembered earlier."""
    monkeypatch.setattr("omninode_bridge.core.dsn._REMEMBERED", set())


@pytest.mark.usefixtures("nothing_remembered")
@pytest.mark.parametrize(("dsn", "fragments"), FORMS, ids=IDS)
def test_redacted_forms_keep_the_rest(dsn: str, fragments: list[str]) -> None:
    shown = redact_dsn(dsn)
    _clean(shown, fragments)
    assert "***" in shown and "db.example" in shown
    assert redact_dsn(shown) == shown, "redaction is idempotent"
    _clean(redact_text(f"cannot connect to {dsn}: refused"), fragments)
    _clean(redact_text(f"(DSN {dsn})"), fragments)


@pytest.mark.parametrize(("dsn", "fragments"), FORMS, ids=IDS)
def test_settings_repr_errors_and_logs(
    dsn: str, fragments: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    try:
        settings = LockSettings.load({"OMNINODE_POSTGRES_DSN": dsn}, env_file=None)
    except LockValidationError as err:  # the unencoded '@' is refused, redacted
        assert "percent-encode" in err.message
        _clean(str(err), fragments)
        _clean(repr(err), fragments)
    else:
        for text in (repr(settings), str(settings), settings.safe_dsn(), str(settings.model_dump())):
            _clean(text, fragments)
    with caplog.at_level(logging.INFO, logger="omninode_bridge"):
        line = emit_log_event(
            "warning", f"connecting to {dsn} failed", {"dsn": dsn, "target": dsn, "error": ValueError(dsn)}
        )
    _clean(line, fragments)
    _clean(caplog.text, fragments)
    assert json.loads(line)["message"].startswith("connecting to ")


def test_keyword_form_becomes_a_url_for_asyncpg() -> None:
    url = to_url("host=db port=6432 user='a b' password='x y@z' dbname=locks sslmode=require")
    assert url == "postgresql://a%20b:x%20y%40z@db:6432/locks?sslmode=require"
    assert parse_dsn(url)["password"] == "x y@z"
    assert to_url("host=/run/pg user=u") == "postgresql://u@/?host=/run/pg"


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("postgresql://bob:Sekr1tPW@h:99999/db", "port '99999' is not a number from 1 to 65535"),
        ("postgresql://bob:Sekr1tPW@h:notaport/db", "port 'notaport'"),
        ("host='unterminated password=Sekr1tPW", "unterminated quoted string"),
        ("postgresql://bob:Sekr1t@PW9@h/db", "unencoded '@'"),
        ("postgresql://bob:Sekr1t PW9@h/db", "unexpected spaces"),
    ],
)
def test_malformed_dsns_are_refused_without_the_password(dsn: str, reason: str) -> None:
    with pytest.raises(DsnError) as caught:
        check_dsn(dsn)
    assert reason in str(caught.value)
    _clean(str(caught.value), ["Sekr1t"])


def test_connect_errors_say_what_failed_without_the_password() -> None:
    dsn = "postgresql://bob:Sekr1tPW@db.example:6543/locks"
    cases = [
        (asyncpg.InvalidPasswordError('password authentication failed for user "bob"'),
         "authentication failed for user 'bob' at db.example:6543"),
        (asyncpg.InvalidCatalogNameError('database "locks" does not exist'),
         "database 'locks' does not exist at db.example:6543"),
        (socket.gaierror(-2, "Name or service not known"), "host not found: 'db.example' does not resolve"),
        (ConnectionRefusedError(111, "Connect call failed"), "connection refused by db.example:6543"),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 6543)"), "connection refused by"),
        (TimeoutError(), "timed out after 2 s connecting to PostgreSQL at db.example:6543"),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"),
         "PostgreSQL at db.example:6543 refused the connection: sorry, too many clients already"),
    ]  # fmt: skip
    for exc, expected in cases:
        err = connect_error(exc, dsn, timeout=2)
        assert isinstance(err, LockDatabaseError), exc
        assert expected in str(err), str(err)
        assert str(err).startswith("DATABASE_ERROR: ")
        assert "db.example" in str(err) and "Sekr1tPW" not in str(err)
    bad_port = connect_error(OverflowError("connect(): port must be 0-65535."), dsn)
    assert isinstance(bad_port, LockValidationError) and "Sekr1tPW" not in str(bad_port)


@pytest.mark.usefixtures("nothing_remembered")
def test_log_context_dsn_values_are_parsed_whole() -> None:
    """A URL with a raw space in its password cannot be cut out of prose; under a DSN key
    the whole value is one DSN, so the conservative redaction hides all of its user-info."""
    line = emit_log_event(
        "info",
        "pool opened",
        {"dsn": "postgresql://bob:Sekr1t PW9@db/locks", "database_url": "password=Sekr1tPW"},
    )
    _clean(line, ["Sekr1t", "PW9"])
    assert json.loads(line)["dsn"] == "postgresql://***@db/locks"
