"""The security tests' service: tokens configured, every logger at DEBUG, and a DSN that
carries a password, all of whose output is kept so a test can grep every line of it."""

from __future__ import annotations

import secrets
import sys
from urllib.parse import urlsplit, urlunsplit

from svc_helpers import Service

# the CLI with the root logger at DEBUG: asyncpg, uvicorn and our own events all log
DEBUG_CLI = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "from omninode_bridge.scripts import omninode_lock; sys.argv[0] = 'omninode-lock'; omninode_lock()"
)


def with_password(dsn: str, password: str) -> str:
    """``dsn`` with ``password`` in its user info (trust auth ignores it; logs must not)."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, parts.fragment))


class SecureService(Service):
    """``omninode-lock serve`` at DEBUG with a client and an admin token; its log is kept
    after it stops, for a test to grep every line."""

    def __init__(self, dsn: str, **env: str) -> None:
        self.password = f"pw-{secrets.token_hex(8)}"
        self.client_token = f"ct-{secrets.token_hex(12)}"
        self.admin_token = f"at-{secrets.token_hex(12)}"
        self.plain_dsn = dsn
        super().__init__(
            with_password(dsn, self.password),
            command=(sys.executable, "-c", DEBUG_CLI),
            log_level="debug",
            keep_log=True,
            OMNINODE_CLIENT_TOKENS=self.client_token,
            OMNINODE_ADMIN_TOKENS=self.admin_token,
            **env,
        )

    def headers(self, role: str = "client") -> dict[str, str]:
        token = self.client_token if role == "client" else self.admin_token
        return {"Authorization": f"Bearer {token}"}
