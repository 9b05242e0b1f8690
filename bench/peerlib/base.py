"""The adapter interface every benchmarked lock system implements.

A :class:`System` opens *sessions*, one per simulated client. A session can try a
lock once (``try_acquire`` -> handle or ``None``), release a handle, and — where the
system has one — block until granted (``acquire_wait``). Async systems return
:class:`AsyncSession` objects driven by asyncio tasks; sync systems return
:class:`SyncSession` objects driven by threads, so neither pays for a bridge to the
other's world.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit


class Unavailable(Exception):
    """This system cannot run here (package missing, server absent); the message says why."""


@dataclass(frozen=True)
class Facts:
    """What one grant of the system guarantees (static facts, stated honestly)."""

    durable: str
    fencing: str
    server_expiry: str


class AsyncSession(Protocol):
    async def try_acquire(self, name: str) -> Any | None: ...

    async def release(self, handle: Any) -> None: ...

    async def acquire_wait(self, name: str) -> Any: ...


class SyncSession(Protocol):
    def try_acquire(self, name: str) -> Any | None: ...

    def release(self, handle: Any) -> None: ...

    def acquire_wait(self, name: str) -> Any: ...


class System:
    """One lock system (or one labelled variant of it).

    ``key`` names the row (``redis_py_1ms``...), ``json_key`` the entry of
    ``peers.json`` it fills (``None`` for variants that only appear in the tables).
    """

    key = ""
    json_key: str | None = None
    label = ""
    facts = Facts("", "", "")
    is_sync = False
    uncontended = True
    contended = True
    note = ""  # how the system is called, for the report

    async def start(self) -> None:
        """Check the system can run (raise :class:`Unavailable`) and start what it needs."""

    async def open(self, clients: int, contended: bool) -> Sequence[AsyncSession | SyncSession]:
        """``clients`` sessions; ``contended`` asks for independent clients (one per contender)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the sessions of the last :meth:`open`."""

    async def stop(self) -> None:
        """Stop what :meth:`start` started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_query(dsn: str, **params: str) -> str:
    """``dsn`` (URL form) with extra query parameters, e.g. ``application_name``."""
    parts = urlsplit(dsn)
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


async def close_quietly(*closers: Any) -> None:
    """Await each closer (a coroutine), ignoring errors: the bench tears down on any path."""
    for closer in closers:
        with contextlib.suppress(Exception):
            await closer


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (what an advisory-lock user computes)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def require(*modules: str, hint: str = "pip install -e '.[bench]'") -> None:
    """Import ``modules`` or raise :class:`Unavailable` naming the missing one."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise Unavailable(f"{module} does not import here ({err}; {hint})") from None


async def to_thread_all(calls: Sequence[Any]) -> list[Any]:
    """Run blocking callables concurrently in threads (opening many sync clients)."""
    return list(await asyncio.gather(*(asyncio.to_thread(c) for c in calls)))
