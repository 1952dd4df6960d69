"""How the worker talks to the server: JSON requests, the errors they end in, and backoff between tries.

Trouble with the server is logged here too, so that an outage shows up once, as a warning, rather than
once per failed request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import orjson

logger = logging.getLogger("taskyard.worker")

Json = dict[str, Any]

BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0

_WARN_EVERY_SECONDS = 30.0


class ServerError(Exception):
    """The server answered, but not with success."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Json | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after


class RegistrationRefused(Exception):
    pass


class Backoff:
    def __init__(self, first: float = BACKOFF_FIRST_SECONDS, cap: float = BACKOFF_MAX_SECONDS) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, delay * 2)
        return delay

    def reset(self) -> None:
        self._next = self._first


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), 60.0)


def _spring_error(response: httpx.Response, payload: object) -> ServerError:
    """``{"timestamp", "status", "error", "message", "path"}``; it names no error code, so the status is the code."""
    status = response.status_code
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, str) or not message:
        message = response.reason_phrase or "request failed"
    return ServerError(status, f"HTTP_{status}", message, None, _retry_after(response))


class ServerApi:
    """The server's API as the worker uses it: JSON in, the envelope's ``data`` out, failures as ServerError."""

    def __init__(self, server: str, api_key: str | None, client: httpx.AsyncClient | None = None) -> None:
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        self.base_url = server.rstrip("/") + "/api"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._unreachable_since: float | None = None
        self._last_warned: dict[str, float] = {}

    async def aclose(self) -> None:
        """Closes the HTTP client, unless it was handed in (then its owner closes it)."""
        if self._owns_client:
            await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        enveloped: bool = True,
    ) -> Json:
        """The envelope's ``data``; with ``enveloped=False`` (the tracking endpoints, which answer bare
        JSON and Spring-Boot-shaped errors) the whole JSON object."""
        response = await self._client.request(
            method,
            self.base_url + path,
            content=orjson.dumps(body) if body is not None else None,
            headers=self._headers,
            timeout=timeout,
        )
        status = response.status_code
        try:
            payload = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            payload = None
        if 200 <= status < 300:
            if not isinstance(payload, dict):
                raise ServerError(status, "BAD_RESPONSE", "the server's answer is not a JSON object")
            if not enveloped:
                return payload
            data = payload.get("data")
            return data if isinstance(data, dict) else {}
        if not enveloped:
            raise _spring_error(response, payload)
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            error = {}
        details = error.get("details")
        raise ServerError(
            status,
            str(error.get("code") or "HTTP_ERROR"),
            str(error.get("message") or response.reason_phrase or "request failed"),
            details if isinstance(details, dict) else None,
            _retry_after(response),
        )

    # -- trouble ------------------------------------------------------------------------------------

    def unreachable(self, what: str, exc: BaseException) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            logger.warning("cannot reach the server (%s: %s); retrying", what, describe(exc))
        else:
            logger.debug("%s failed: %s", what, describe(exc))

    def reachable(self) -> None:
        if self._unreachable_since is not None:
            logger.info("the server is reachable again (after %.1fs)", time.monotonic() - self._unreachable_since)
            self._unreachable_since = None

    def refused(self, what: str, exc: ServerError) -> None:
        key = f"{what}:{exc.status}"
        now = time.monotonic()
        if now - self._last_warned.get(key, -_WARN_EVERY_SECONDS) >= _WARN_EVERY_SECONDS:
            self._last_warned[key] = now
            logger.warning("%s refused by the server: %s; retrying", what, exc)
        else:
            logger.debug("%s refused by the server: %s", what, exc)
