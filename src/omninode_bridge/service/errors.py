"""Every failure as ``{"error_code", "error_message", "details"}`` with the SPEC's
status codes. Bad input is a 4xx naming the problem; nothing reaches a 500 page
except a real bug, which is logged (without request bodies) and reported as 500."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.errors import LockError

STATUS = {
    "LOCK_HELD_BY_OTHER": 409,
    "LOCK_TIMEOUT": 409,
    "LOCK_NOT_HELD": 409,
    "DEADLOCK_DETECTED": 409,
    "LOCK_EXPIRED": 410,
    "LOCK_NOT_FOUND": 404,
    "VALIDATION_ERROR": 422,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "DATABASE_ERROR": 503,
}


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error_code": code, "error_message": message, "details": details}


def error_response(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message, **details), status_code=status, headers=headers)


def lock_error_response(err: LockError) -> JSONResponse:
    status = STATUS.get(err.code, 500)
    headers: dict[str, str] = {}
    retry_ms = err.details.get("retry_after_ms")
    if status == 409 and isinstance(retry_ms, int):
        headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(err.to_wire(), status_code=status, headers=headers or None)


def _describe(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """One readable line naming the first problem, and every problem as data."""
    problems = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append({"field": where, "problem": e.get("msg", "invalid"), "type": e.get("type", "")})
    if not problems:
        return "invalid request", []
    first = problems[0]
    if first["type"] == "json_invalid":
        first["field"] = "body"
        return f"malformed JSON body: {first['problem']}", problems
    if first["type"] == "extra_forbidden":
        return f"unknown field {first['field']!r}", problems
    return f"{first['field']}: {first['problem']}", problems


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LockError)
    async def on_lock_error(request: Request, err: LockError) -> JSONResponse:
        return lock_error_response(err)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, problems = _describe(list(err.errors()))
        return error_response(422, "VALIDATION_ERROR", message, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN"}.get(err.status_code, "VALIDATION_ERROR")
        if err.status_code == 404:
            code, message = "NOT_FOUND", f"no route {request.method} {request.url.path}"
        elif err.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(err.detail)
        return error_response(err.status_code, code, message)

    @app.exception_handler(asyncpg.DataError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    @app.exception_handler(Exception)
    async def on_other(request: Request, err: Exception) -> JSONResponse:
        return exception_response(err, request.url.path)


def exception_response(err: Exception, path: str) -> JSONResponse:
    """The answer to an exception a route raised (the app's handlers and the hot path)."""
    if isinstance(err, LockError):
        return lock_error_response(err)
    if isinstance(err, asyncpg.DataError):
        # SQLSTATE class 22: the database refused a value the caller sent
        return error_response(422, "VALIDATION_ERROR", f"the database refused a value ({err.sqlstate})")
    if isinstance(err, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        return error_response(503, "DATABASE_ERROR", f"database unreachable ({type(err).__name__})")
    emit_log_event(
        LogLevel.ERROR, "unhandled error in the lock service", {"path": path, "error": type(err).__name__}
    )
    return error_response(500, "INTERNAL_ERROR", "internal error (logged)")
