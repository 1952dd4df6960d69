"""/api/{tenantId}/{projectId}/execution: job logs, progress, timeline, metrics, dependencies, batch.

Handlers parse, call `core.jobs`, and write instants as spec 5 does (UTC to the second, with a Z).
`POST …/job/{jobId}/subscribe` is not served (404): see docs/api.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from taskyard.api.envelope import JSONResponse
from taskyard.api.scheduler.common import NO_NUL, Services
from taskyard.api.security import allow
from taskyard.services.access import Permission, Principal
from taskyard.services.job_figures import instant_text
from taskyard.services.scope import Scope

router = APIRouter(prefix="/{tenant_id}/{project_id}/execution", tags=["job tracking"])
read = [Depends(allow(Permission.READ))]

# No pattern here: anything that is not a known GUID gets the same 404 as an unknown one.
TenantId = Annotated[str, Path(max_length=64, description="tenant id (a GUID)")]
ProjectId = Annotated[str, Path(max_length=64, description="project id (a GUID)")]
JobId = Annotated[str, Path(max_length=64, description="job id: a run's uuid")]


def scope_of(request: Request) -> Scope | None:
    """The credential's project scope. The path names the project here, so with auth off (the anonymous
    principal) any project may be named; a key or token scoped to one project sees 404 for the others."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.kind == "anonymous":
        return None
    return principal.scope


def shape(value: Any) -> Any:
    if isinstance(value, datetime):
        return instant_text(value)
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/job/{job_id}/logs", dependencies=read)
async def job_logs(request: Request, core: Services, tenant_id: TenantId, project_id: ProjectId, job_id: JobId,
                   level: Annotated[str, Query(max_length=16, pattern=NO_NUL)] = "INFO",
                   from_time: Annotated[datetime | None, Query(alias="fromTime")] = None,
                   to_time: Annotated[datetime | None, Query(alias="toTime")] = None,
                   limit: Annotated[int, Query(le=2**31)] = 1000,
                   format: Annotated[str, Query(pattern="^(structured|raw)$")] = "structured") -> Response:
    answer = await core.jobs.logs(tenant_id, project_id, job_id, level=level, since=_utc(from_time),
                                  until=_utc(to_time), limit=limit, raw=format == "raw", scope=scope_of(request))
    return JSONResponse(shape(answer))


@router.get("/job/{job_id}/progress", dependencies=read)
async def job_progress(request: Request, core: Services, tenant_id: TenantId, project_id: ProjectId,
                       job_id: JobId) -> Response:
    return JSONResponse(shape(await core.jobs.progress(tenant_id, project_id, job_id, scope=scope_of(request))))


@router.get("/job/{job_id}/timeline", dependencies=read)
async def job_timeline(request: Request, core: Services, tenant_id: TenantId, project_id: ProjectId, job_id: JobId,
                       include_sub_events: Annotated[bool, Query(alias="includeSubEvents")] = False,
                       granularity: Annotated[str, Query(max_length=32)] = "minutes") -> Response:
    answer = await core.jobs.timeline(tenant_id, project_id, job_id, include_sub_events=include_sub_events,
                                      granularity=granularity, scope=scope_of(request))
    return JSONResponse(shape(answer))


@router.get("/job/{job_id}/metrics", dependencies=read)
async def job_metrics(request: Request, core: Services, tenant_id: TenantId, project_id: ProjectId, job_id: JobId,
                      interval: Annotated[str, Query(max_length=16)] = "5m",
                      metrics: Annotated[str | None, Query(max_length=200)] = None,
                      include_history: Annotated[bool, Query(alias="includeHistory")] = False) -> Response:
    answer = await core.jobs.metrics(tenant_id, project_id, job_id, interval=interval, metrics=metrics,
                                     include_history=include_history, scope=scope_of(request))
    return JSONResponse(shape(answer))


@router.get("/job/{job_id}/dependencies", dependencies=read)
async def job_dependencies(request: Request, core: Services, tenant_id: TenantId, project_id: ProjectId,
                           job_id: JobId) -> Response:
    answer = await core.jobs.dependencies(tenant_id, project_id, job_id, scope=scope_of(request))
    return JSONResponse(shape(answer))


@router.get("/tracking/batch", dependencies=read)
async def tracking_batch(request: Request, core: Services, tenant_id: TenantId, project_id: ProjectId,
                         job_ids: Annotated[str | None, Query(alias="jobIds", max_length=40_000)] = None,
                         status: Annotated[str | None, Query(max_length=32)] = None,
                         submitted_by: Annotated[str | None, Query(alias="submittedBy", max_length=255,
                                                                   pattern=NO_NUL)] = None,
                         include_metrics: Annotated[bool, Query(alias="includeMetrics")] = False,
                         refresh_interval: Annotated[int | None, Query(alias="refreshInterval", ge=0)] = None,
                         ) -> Response:
    ids = None if job_ids is None else [j.strip() for j in job_ids.split(",") if j.strip()]
    answer = await core.jobs.batch(tenant_id, project_id, job_ids=ids, status=status, submitted_by=submitted_by,
                                   include_metrics=include_metrics, scope=scope_of(request))
    return JSONResponse(shape(answer))
