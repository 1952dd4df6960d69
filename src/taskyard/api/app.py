"""The ASGI application: every API dialect on one server, plus the leader loops in its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskyard import __version__
from taskyard.api import errors, jobs, tracking
from taskyard.api.envelope import RequestIdMiddleware, new_request_id
from taskyard.api.observability import Metrics, RequestMeter, SystemLogBuffer, TimingMiddleware
from taskyard.api.scheduler import runs, system, tasks, tenants, workers
from taskyard.api.security import RateLimiter
from taskyard.domain.errors import Unavailable
from taskyard.services.access import JwtConfig
from taskyard.services.clock import Clock, system_clock
from taskyard.services.core import Core, CoreConfig
from taskyard.settings import ServerSettings
from taskyard.storage import migrate
from taskyard.storage.database import Database
from taskyard.storage.leader import libpq_url

log = logging.getLogger("taskyard.api")


class Background(Protocol):
    """Work that lives as long as the server (the leader loops); started after the core is built."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_core(settings: ServerSettings, clock: Clock = system_clock) -> Core:
    db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
    core = Core(db, CoreConfig(lease_seconds=settings.lease_seconds, poll_wait_max=settings.poll_wait_max,
                               page_size_max=settings.page_size_max, retention_days=settings.retention_days),
                clock=clock)
    core.access.configure(forced=settings.auth, jwt_config=JwtConfig(
        secret=settings.jwt_secret, public_key=settings.jwt_public_key, audience=settings.jwt_audience,
        issuer=settings.jwt_issuer))
    if settings.auth is None and not settings.binds_loopback:
        core.access.forced = True  # never an open API on a reachable address
    core.system.data_dir = settings.home if settings.home.exists() else core.system.data_dir
    return core


def create_app(settings: ServerSettings | None = None, *, background: Callable[[Core], Background] | None = None,
               migrate_on_start: bool = True, clock: Clock = system_clock) -> FastAPI:
    settings = settings or ServerSettings.load()
    system_logs = SystemLogBuffer(settings.system_log_capacity)
    metrics = Metrics()
    meter = RequestMeter()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("taskyard").addHandler(system_logs)
        if migrate_on_start:
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        core = build_core(settings, clock)
        core.run_observers.append(metrics.observe_run)
        app.state.core = core
        if core.db.is_postgres:
            core.db.wakeup.start_listening(libpq_url(settings.resolved_database_url))
        loops = background(core) if background is not None else None
        if loops is not None:
            loops.start()
        try:
            mode = "required" if await core.access.required() else "off (loopback, no API keys yet)"
        except Unavailable:
            mode = "unknown until the database answers"
            log.error("the database is unreachable; requests get 503 until it answers")
        log.info("taskyard %s serving on %s:%s, database %s, auth %s", __version__, settings.host, settings.port,
                 core.db.dialect, mode)
        try:
            yield
        finally:
            if loops is not None:
                await loops.stop()
            await core.db.wakeup.stop()
            await core.db.dispose()
            logging.getLogger("taskyard").removeHandler(system_logs)

    app = FastAPI(title="taskyard", version=__version__, lifespan=lifespan, openapi_url="/api/openapi.json",
                  docs_url="/api/docs", redoc_url=None,
                  # Clients that post JSON without a Content-Type header still mean JSON.
                  strict_content_type=False)
    app.state.settings = settings
    app.state.system_logs = system_logs
    app.state.metrics = metrics
    app.state.request_meter = meter
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    errors.install(app, formatters={tracking.PREFIX: tracking.spring_error})

    api = APIRouter(prefix="/api")
    for module in (tasks, runs, workers, system, tenants):
        api.include_router(module.router)
    api.include_router(tracking.router)
    api.include_router(jobs.router)
    app.include_router(api)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware, meter=meter, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, whether or not a Content-Length was sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        started = replaced = False

        async def guarded_send(message: Message) -> None:
            # Once the body ran over, whatever the app answers (it saw a disconnect) becomes the 413.
            nonlocal started, replaced
            if message["type"] == "http.response.start" and not started:
                started = True
                if too_large:
                    replaced = True
                    await self._too_large(scope, send)
                    return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        scope.setdefault("state", {}).setdefault("request_id", new_request_id())
        response = errors.render(scope, 413, "PAYLOAD_TOO_LARGE", f"request body over {self.max_bytes} bytes")
        await response(scope, lambda: _empty(), send)


async def _empty() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
