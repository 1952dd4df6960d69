"""Credentials, roles and the per-credential rate limit, as route dependencies."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from taskyard.domain.errors import RateLimited, Unavailable
from taskyard.services.access import Permission, Principal, Role
from taskyard.services.core import Core
from taskyard.services.scope import Scope


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per credential (per client address when auth is off). 0 per second turns it off."""

    MAX_BUCKETS = 10_000

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str) -> None:
        if self.per_second <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RateLimited(f"rate limit of {self.per_second:g} requests/s exceeded",
                              retry_after=(1.0 - bucket.tokens) / self.per_second)
        bucket.tokens -= 1.0


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query_params.get("api_key") or None


def allow(permission: Permission, *, open_when_database_down: bool = False,
          ) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency. `open_when_database_down` is for the health check only: when credentials
    cannot be checked because the database is down, it still answers, so probes see which part failed."""

    async def dependency(request: Request) -> Principal:
        core: Core = request.app.state.core
        try:
            principal = await core.access.authenticate(bearer_token(request))
        except Unavailable:
            if not open_when_database_down:
                raise
            principal = Principal("health-probe", Role.VIEWER, "anonymous")  # the default project
        limiter: RateLimiter = request.app.state.rate_limiter
        client = request.client.host if request.client else "unknown"
        limiter.check(principal.subject if principal.kind != "anonymous" else f"ip:{client}")
        principal.require(permission)
        request.state.principal = principal
        return principal

    return dependency


async def scope_of(request: Request) -> Scope:
    """The project the caller acts in, from the principal `allow()` put on the request (a coroutine, so
    FastAPI does not hand it to a worker thread). Route-level
    `dependencies=[Depends(allow(...))]` run before the handler's parameters, so it is always there; if a
    route forgot `allow()`, this fails closed instead of acting in every project."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise RuntimeError(f"{request.url.path}: scope asked for before allow() authenticated the caller")
    return principal.scope


# A handler parameter: the caller's scope, to hand to the service as an explicit argument.
Scoped = Annotated[Scope, Depends(scope_of)]
