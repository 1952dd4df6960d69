"""The `{success, data, metadata}` envelope of the scheduler API, request ids, and JSON encoding."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskyard import __version__

JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_fallback, option=JSON_OPTIONS)
    except TypeError:
        # Integers past 64 bits and lone surrogates (bad input echoed in an error) become text.
        return orjson.dumps(_portable(value), default=_fallback, option=JSON_OPTIONS)


def _portable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_portable(k): _portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_portable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _fallback(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def metadata(request_id: str) -> dict[str, Any]:
    return {"timestamp": datetime.now(UTC), "request_id": request_id, "version": __version__}


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id") or new_request_id())


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def ok(scope_or_request: Any, data: Any, status_code: int = 200) -> JSONResponse:
    scope = getattr(scope_or_request, "scope", scope_or_request)
    return JSONResponse({"success": True, "data": data, "metadata": metadata(request_id_of(scope))},
                        status_code=status_code)


def failure(request_id: str, status_code: int, code: str, message: str, details: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"success": False, "error": {"code": code, "message": message, "details": details or {}},
            "metadata": metadata(request_id)}
    return JSONResponse(body, status_code=status_code, headers=headers)


_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Accept a sane incoming X-Request-ID or make one; echo it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if _SAFE_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
