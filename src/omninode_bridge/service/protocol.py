"""uvicorn's httptools protocol, with one send per response instead of two.

uvicorn writes a response's status line and headers as soon as the application sends
``http.response.start``, then the body as a second write: two ``send`` system calls and
two TCP segments (so often two wake-ups of the client) for every small JSON answer.
On loopback, where the kernel delivers to the receiver inside the sender's system
call, that second send cost about as much CPU as the rest of the request. Here the
writes made during one event-loop step are joined and sent at the end of the step
(``call_soon``); a stream (SSE) still sends each chunk in the step that wrote it, and
``close()`` sends what is pending first. Passed to uvicorn as ``Config(http=...)``,
its documented way to choose the protocol class.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any


class CoalescingTransport:
    """A transport whose writes within one loop step leave as one ``send``."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


def _define() -> type[asyncio.Protocol] | None:
    try:  # httptools not installed: None, and uvicorn makes its own choice (h11)
        module = importlib.import_module("uvicorn.protocols.http.httptools_impl")
    except ImportError:
        return None
    base: Any = module.HttpToolsProtocol

    class CoalescingHttpToolsProtocol(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(CoalescingTransport(transport, self.loop))

    CoalescingHttpToolsProtocol.__qualname__ = "CoalescingHttpToolsProtocol"  # picklable by name
    return CoalescingHttpToolsProtocol


# module level, so uvicorn's worker processes (``--workers N``) can unpickle it by name
CoalescingHttpToolsProtocol = _define()


def coalescing_protocol() -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.Config(http=...)``; None without httptools."""
    return CoalescingHttpToolsProtocol
