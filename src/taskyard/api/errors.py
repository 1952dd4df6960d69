"""Every error becomes the documented envelope here, in one place; never a stack trace.

The envelope is the scheduler dialect's (spec 2) unless a dialect registered another shape for its path
prefix (`install(app, formatters={"/api/tracking": ...})`): the status is decided here, the shape there."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from taskyard.api.envelope import failure, request_id_of
from taskyard.domain.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    TaskyardError,
    Unavailable,
    ValidationFailed,
)

log = logging.getLogger("taskyard.api")

STATUS_OF: list[tuple[type[TaskyardError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (ValidationFailed, 422),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (RateLimited, 429),
    (Unavailable, 503),
]

HTTP_CODES = {400: "VALIDATION_ERROR", 401: "AUTHENTICATION_ERROR", 403: "AUTHORIZATION_ERROR",
              404: "RESOURCE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "RESOURCE_CONFLICT",
              413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
              429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"}


def status_for(exc: TaskyardError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            return status
    return 500


# (scope, status, code, message, details, headers) -> the response in that dialect's shape
ErrorFormatter = Callable[[Scope, int, str, str, dict[str, Any], dict[str, str]], Response]


def render(scope: Scope, status: int, code: str, message: str, details: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> Response:
    """The error in the shape of the dialect that owns the path (longest registered prefix wins)."""
    path = str(scope.get("path", ""))
    formatters: dict[str, ErrorFormatter] = getattr(getattr(scope.get("app"), "state", None),
                                                    "error_formatters", {})
    for prefix in sorted(formatters, key=len, reverse=True):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return formatters[prefix](scope, status, code, message, details or {}, headers or {})
    return failure(request_id_of(scope), status, code, message, details, headers)


def _respond(request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Response:
    return render(request.scope, status, code, message, details, headers)


async def on_taskyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaskyardError)
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, AuthenticationFailed):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = "5"
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    details = {k: v for k, v in exc.details.items() if k not in {"retry_after"}}
    return _respond(request, status, exc.code, exc.message, details, headers)


async def on_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    rule = str(first.get("type", "invalid"))
    if rule in {"json_invalid", "model_attributes_type"} or (rule in {"dict_type", "missing", "model_type"}
                                                             and not loc):
        return _respond(request, 400, "VALIDATION_ERROR", "the request body is not a valid JSON object",
                        {"field": None, "rule": "json", "value": None})
    value = first.get("input")
    if isinstance(value, dict | list) and len(str(value)) > 200:
        value = None
    message = f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid value')}"
    details = {"field": ".".join(loc) or None, "rule": rule, "value": value}
    if len(errors) > 1:
        details["errors"] = [{"field": ".".join(str(p) for p in e.get("loc", ())
                                                 if p not in ("body", "query", "path")),
                              "rule": e.get("type"), "message": e.get("msg")} for e in errors[:20]]
    return _respond(request, 422, "VALIDATION_ERROR", message, details)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "SYSTEM_ERROR")
    message = str(exc.detail) if exc.detail else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    return _respond(request, exc.status_code, code, message, {}, dict(exc.headers or {}))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, OperationalError | DBAPIError) and _looks_unreachable(exc):
        return _respond(request, 503, "DATABASE_ERROR", "the database is unreachable", {},
                        {"Retry-After": "5"})
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return _respond(request, 500, "SYSTEM_ERROR", "internal error; see the server log for request "
                    + request_id_of(request.scope), {})


def _looks_unreachable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("connection", "could not connect", "unable to open", "server closed",
                                   "terminating"))


def install(app: FastAPI, formatters: dict[str, ErrorFormatter] | None = None) -> None:
    app.state.error_formatters = dict(formatters or {})
    app.add_exception_handler(TaskyardError, on_taskyard_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
