"""/api/system: health, statistics, Prometheus metrics, the server's own logs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from taskyard import __version__
from taskyard.api.envelope import ok
from taskyard.api.observability import LEVELS, Metrics, RequestMeter, SystemLogBuffer
from taskyard.api.scheduler import shapes
from taskyard.api.scheduler.common import Services
from taskyard.api.security import Scoped, allow
from taskyard.domain.errors import ValidationFailed
from taskyard.services.access import Permission

router = APIRouter(prefix="/system", tags=["system"])
read = [Depends(allow(Permission.READ))]


@router.get("/health", dependencies=[Depends(allow(Permission.READ, open_when_database_down=True))])
async def health(request: Request, core: Services, scope: Scoped) -> Response:
    components = await core.system.health(scope=scope)
    meter: RequestMeter = request.app.state.request_meter
    components["api"] = {"status": "healthy", **meter.summary()}
    statuses = {c.get("status") for c in components.values()}
    overall = "unhealthy" if components["database"]["status"] != "healthy" else (
        "degraded" if "unhealthy" in statuses else "healthy")
    data = {"status": overall, "timestamp": datetime.now(UTC), "version": __version__,
            "uptime_seconds": round(core.system.uptime_seconds, 3), "components": components}
    response = ok(request, data, 503 if overall == "unhealthy" else 200)
    if overall == "unhealthy":
        response.headers["Retry-After"] = "5"
    return response


@router.get("/stats", dependencies=read)
async def stats(request: Request, core: Services, scope: Scoped) -> Response:
    return ok(request, await core.system.stats(scope=scope))


@router.get("/metrics", dependencies=read)
async def metrics(request: Request, core: Services, scope: Scoped) -> Response:
    registry: Metrics = request.app.state.metrics
    body = registry.render(await core.system.gauges(scope=scope), leader=core.scheduling.is_leader,
                           fired=core.scheduling.fired_total)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/logs", dependencies=read)
async def logs(request: Request,
               level: Annotated[str | None, Query(max_length=16)] = None,
               service: Annotated[str | None, Query(max_length=64)] = None,
               start_time: datetime | None = None, end_time: datetime | None = None,
               page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
               size: Annotated[int, Query(ge=1, le=1000)] = 50) -> Response:
    if level is not None and level.lower() not in LEVELS:
        raise ValidationFailed("level must be one of debug, info, warn, error", field="level", rule="one_of",
                               value=level)
    buffer: SystemLogBuffer = request.app.state.system_logs
    items, total = buffer.query(level=level.lower() if level else None, service=service,
                                start=_aware(start_time), end=_aware(end_time), page=page, size=size)
    return ok(request, shapes.page(items, total, page, size))


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
