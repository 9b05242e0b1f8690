"""PostgreSQL connection strings: parse them, show them without secrets, hand them to asyncpg.

A DSN comes in two forms: a URL (``postgresql://user:pw@host:5432/db?sslmode=require``,
also ``postgres://``) and libpq's keyword form (``host=db user=svc password='a b'``).
Both are parsed by libpq's own parser (psycopg's ``conninfo_to_dict``), so what we show
is what the driver understood. When a string cannot be parsed, or parses ambiguously
(an unencoded ``@`` in a URL's password makes libpq read part of the password as the
host), the redaction falls back to hiding everything that could be a password.
Every rendering is finally scrubbed of each password candidate, so a secret that a
parser misplaced still cannot come out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

REDACTED = "***"
_SECRET_PARAMS = ("password", "sslpassword")
_URL = re.compile(r"^(?P<scheme>postgres(?:ql)?)://(?P<rest>.*)$", re.I | re.S)
# Conservative patterns, used only to find password candidates and when parsing failed.
_KEYWORD_SECRET = re.compile(r"(?P<key>\b(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s']*)", re.I)
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:ssl)?password=)(?P<value>[^&#\s]*)", re.I)
_ANY_URL_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^\s]*)(?P<tail>@)", re.I)
# a URL inside prose: ends before whitespace, quotes, and trailing punctuation
_PG_URL_IN_TEXT = re.compile(r"\bpostgres(?:ql)?://[^\s\"'<>]*[^\s\"'<>).,;:]", re.I)


_MIN_SCRUB = 3
_REMEMBERED: set[str] = set()


class DsnError(ValueError):
    """A connection string that cannot be used; the message never contains a secret."""

    def __init__(self, dsn: str, reason: str) -> None:
        self.safe_dsn = redact_dsn(dsn)
        self.reason = reason
        super().__init__(f"invalid DSN {self.safe_dsn}: {reason}")


def is_url(dsn: str) -> bool:
    return _URL.match(dsn.strip()) is not None


def parse_dsn(dsn: str) -> dict[str, str]:
    """The DSN's parameters as libpq reads them (``host``, ``port``, ``user``, ``dbname``...).

    Raises :class:`DsnError` (with a redacted message) for a string libpq rejects or one
    whose URL password holds an unencoded ``@``.
    """
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # the base install: URLs only, read by the standard URL parser
        return _parse_url_without_libpq(dsn)
    try:
        raw = conninfo_to_dict(dsn)
    except ProgrammingError as err:
        reason = scrub(
            str(err).strip().splitlines()[0] if str(err).strip() else "unparseable", candidates(dsn)
        )
        raise DsnError(dsn, reason) from None
    params = {k: str(v) for k, v in raw.items() if v is not None}
    if is_url(dsn) and "@" in params.get("host", "") + params.get("dbname", "") + params.get("port", ""):
        raise DsnError(
            dsn,
            "the password (or user name) holds an unencoded '@', '/' or ':'; "
            "percent-encode it (for example '@' as %40)",
        )
    return params


def _parse_url_without_libpq(dsn: str) -> dict[str, str]:
    """Without psycopg (it is not in the base install) only the URL form is read, by
    :func:`urllib.parse.urlsplit`; the keyword form needs libpq's parser."""
    if not is_url(dsn):
        raise DsnError(
            dsn, "a keyword-form DSN needs psycopg to be read (pip install 'psycopg[binary]'); or use a URL"
        )
    parts = urlsplit(dsn.strip())
    try:
        port = parts.port
    except ValueError:
        raise DsnError(dsn, "the port is not a number from 1 to 65535") from None
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    if parts.hostname:
        params["host"] = unquote(parts.hostname)
    if port is not None:
        params["port"] = str(port)
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        params["dbname"] = unquote(parts.path.lstrip("/"))
    if "@" in parts.netloc.rsplit("@", 1)[0] and parts.netloc.count("@") > 1:
        raise DsnError(dsn, "the password (or user name) holds an unencoded '@'; percent-encode it as %40")
    return params


def check_dsn(dsn: str) -> dict[str, str]:
    """:func:`parse_dsn` plus the checks libpq leaves to connect time (ports)."""
    params = parse_dsn(dsn)
    for port in filter(None, params.get("port", "").split(",")):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise DsnError(dsn, f"port {port!r} is not a number from 1 to 65535")
    return params


def to_url(dsn: str) -> str:
    """The DSN in the URL form asyncpg accepts (asyncpg does not read the keyword form)."""
    if is_url(dsn):
        return dsn.strip()
    return build_url(parse_dsn(dsn))


def build_url(params: dict[str, str], *, scheme: str = "postgresql", hide: bool = False) -> str:
    """A URL from libpq parameters; with ``hide`` every secret becomes ``***``."""
    rest = dict(params)
    user = quote(rest.pop("user", ""), safe="*" if hide else "")
    password = rest.pop("password", None)
    auth = ""
    if password is not None:
        auth = f"{user}:{REDACTED if hide else quote(password, safe='')}@"
    elif user:
        auth = f"{user}@"
    hosts = rest.pop("host", "").split(",")
    ports = rest.pop("port", "").split(",")
    netloc_parts: list[str] = []
    socket_dirs: list[str] = []
    for i, host in enumerate(hosts):
        port = ports[i] if i < len(ports) else (ports[0] if len(ports) == 1 else "")
        if host.startswith("/") or host.startswith("@"):
            socket_dirs.append(host)
            if port:
                rest.setdefault("port", port)
            continue
        shown = f"[{host}]" if ":" in host else quote(host, safe=".-_~")
        netloc_parts.append(f"{shown}:{port}" if port else shown)
    if socket_dirs:
        rest["host"] = ",".join(socket_dirs)
    dbname = quote(rest.pop("dbname", ""), safe="")
    if hide:
        rest = {k: (REDACTED if k in _SECRET_PARAMS else v) for k, v in rest.items()}
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/*')}" for k, v in rest.items())
    return f"{scheme}://{auth}{','.join(netloc_parts)}/{dbname}" + (f"?{query}" if query else "")


def candidates(dsn: str) -> set[str]:
    """Every string that could be a password in ``dsn``, under any reading of it."""
    found: set[str] = set()
    try:
        from psycopg.conninfo import conninfo_to_dict

        parsed = conninfo_to_dict(dsn)
        found.update(str(parsed[k]) for k in _SECRET_PARAMS if parsed.get(k))
    except Exception:  # any parse failure: the conservative readings below still apply
        pass
    match = _URL.match(dsn.strip())
    if match:
        rest = match["rest"]
        head = rest.rsplit("@", 1)[0] if "@" in rest else ""
        if ":" in head:  # user:password@ — the password runs to the last '@'
            found.add(head.split(":", 1)[1])
            found.add(head.split("@", 1)[0].split(":", 1)[-1])
        found.update(m["value"] for m in _QUERY_SECRET.finditer(rest))
    else:
        found.update(m["value"].strip("'") for m in _KEYWORD_SECRET.finditer(dsn))
    variants = {v for c in found for v in (c, unquote(c), quote(c, safe=""), quote(c))}
    return {v for v in variants if v and v != REDACTED}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (and each remembered one) replaced.

    Longest first; strings shorter than three characters are left alone (scrubbing
    every "p" would garble the text while the structured renderings already hide them).
    """
    for secret in sorted(set(secrets) | _REMEMBERED, key=len, reverse=True):
        if len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, REDACTED)
    return text


def remember_secrets(dsn: str) -> None:
    """Scrub this DSN's passwords from every later :func:`redact_text` in this process.

    Called for each configured DSN, so that even a driver message that quotes part of
    a misparsed DSN, or a URL with a space in its password inside free text, is clean.
    """
    _REMEMBERED.update(c for c in candidates(dsn) if len(c) >= _MIN_SCRUB)


def redact_dsn(dsn: str) -> str:
    """``dsn`` as it may be shown: same form, same host/port/user/database, no password."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception:  # unparseable (or no psycopg): hide whatever could be secret
        return scrub(_conservative(dsn), candidates(dsn))
    match = _URL.match(dsn.strip())
    if match:
        if "@" in params.get("host", "") + params.get("dbname", "") + params.get("port", ""):
            return scrub(_conservative(dsn), candidates(dsn))
        shown = build_url(params, scheme=match["scheme"], hide=True)
    else:
        shown = make_conninfo(**{k: (REDACTED if k in _SECRET_PARAMS else v) for k, v in params.items()})
    return scrub(shown, candidates(dsn))


def _conservative(dsn: str) -> str:
    """Hide the whole user-info of a URL (up to its last '@') and every password value."""
    match = _URL.match(dsn.strip())
    if not match:
        return _KEYWORD_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", dsn)
    rest = _QUERY_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", match["rest"])
    if "@" in rest:
        rest = f"{REDACTED}@{rest.rsplit('@', 1)[1]}"
    return f"{match['scheme']}://{rest}"


def redact_text(text: str) -> str:
    """Hide passwords of any DSN (URL or keyword form) or URL user-info inside free ``text``."""
    text = scrub(text, ())
    text = _PG_URL_IN_TEXT.sub(lambda m: redact_dsn(m.group(0)), text)
    text = _ANY_URL_USERINFO.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", text)
    return _KEYWORD_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)
