"""Errors on /api/tracking look like Spring Boot's default error body, as spec 1 promises."""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.responses import Response
from starlette.types import Scope

from taskyard.api.envelope import JSONResponse


def spring_error(scope: Scope, status: int, code: str, message: str, details: dict[str, Any],
                 headers: dict[str, str]) -> Response:
    """`{timestamp, status, error, message, path}`; a failed validation is 400 there, never 422."""
    if status == 422:
        status = 400
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {"timestamp": datetime.now(UTC), "status": status, "error": phrase, "message": message,
            "path": str(scope.get("path", ""))}
    return JSONResponse(body, status_code=status, headers=headers or None)
