"""Serving the app with uvicorn, with the bind rules of SPEC §4: with no token
configured the service binds loopback only and says so loudly; a public address
without tokens is refused unless ``allow_public_without_auth`` is set."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from collections.abc import Callable
from typing import Any

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockValidationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8070


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: LockSettings, host: str, *, allow_public_without_auth: bool = False) -> str | None:
    """None when binding ``host`` is fine; else the warning to print (or raise when refused)."""
    if settings.client_tokens or settings.admin_tokens:
        return None
    if is_loopback(host):
        return (
            "WARNING: no auth tokens configured (OMNINODE_CLIENT_TOKENS / OMNINODE_ADMIN_TOKENS): "
            f"every local caller is admin; listening on {host} only"
        )
    if not allow_public_without_auth:
        raise LockValidationError(
            f"refusing to listen on {host} with no auth tokens configured; set OMNINODE_CLIENT_TOKENS "
            "and OMNINODE_ADMIN_TOKENS, bind 127.0.0.1, or pass --insecure-no-auth",
            field="host",
        )
    return f"WARNING: listening on {host} with NO AUTHENTICATION: anyone who can reach it is admin"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``service`` extra has it), else None
    (asyncio's own). uvicorn picks it by itself only when it owns the loop (``workers > 1``);
    one worker runs in our loop, so it is chosen here. ``OMNINODE_EVENT_LOOP=asyncio`` opts out."""
    if os.environ.get("OMNINODE_EVENT_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _http() -> dict[str, Any]:
    """uvicorn's ``http`` option: httptools, one send per response (see ``protocol.py``)."""
    from omninode_bridge.service.protocol import coalescing_protocol

    protocol = coalescing_protocol()
    return {} if protocol is None else {"http": protocol}


def serve(
    settings: LockSettings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    workers: int = 1,
    allow_public_without_auth: bool = False,
    log_level: str = "info",
    demo_load: bool = False,
) -> None:
    """Run the service until interrupted. With ``workers > 1`` each worker process
    reads its configuration from the environment / config file (so the DSN must come
    from there too)."""
    import uvicorn

    warning = check_bind(settings, host, allow_public_without_auth=allow_public_without_auth)
    if warning:
        print(f"\n  {warning}\n", file=sys.stderr, flush=True)
        emit_log_event(LogLevel.WARNING, warning)
    if workers == 1:
        import asyncio

        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_serve_one(settings, host, port, log_level=log_level, demo_load=demo_load))
        return
    if demo_load:
        raise LockValidationError("--demo-load runs in a single worker", field="workers")
    if workers > 1:
        uvicorn.run(
            "omninode_bridge.service.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            **_http(),
        )


async def _serve_one(
    settings: LockSettings, host: str, port: int, *, log_level: str, demo_load: bool
) -> None:
    """One worker in this process: print where everything is once it listens, and run
    the demo load beside it when asked."""
    import asyncio
    import contextlib

    import uvicorn

    from omninode_bridge.service.app import create_app

    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level=log_level, **_http())
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    for _ in range(6000):  # uvicorn offers no "started" event: look every 50 ms
        if server.started or serving.done():
            break
        await asyncio.sleep(0.05)
    load: asyncio.Future[None] | None = None
    if server.started:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        print(
            f"\n  omninode lock service on {settings.safe_dsn()}\n"
            f"    dashboard  {base}/\n    API docs   {base}/docs\n    metrics    {base}/metrics\n"
            f"    health     {base}/health\n",
            file=sys.stderr,
            flush=True,
        )
        if demo_load:
            from omninode_bridge.service.demo_load import run_load

            token = (settings.token_values("client") or settings.token_values("admin") or (None,))[0]
            load = asyncio.ensure_future(run_load(base, token=token))
            print("  a small background load is running (demo workers)\n", file=sys.stderr, flush=True)
    try:
        await serving
    finally:
        if load is not None:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
