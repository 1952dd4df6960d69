"""/api/tracking: record events (one or a batch), list runs, list a run's events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from taskyard.api.envelope import JSONResponse
from taskyard.api.scheduler.common import NO_NUL, Services
from taskyard.api.security import Scoped, allow
from taskyard.api.tracking.schemas import BatchBody, EventBody, batch_of, event_of, openapi_body
from taskyard.services.access import Permission
from taskyard.services.tracking import MAX_LIST, StoredEvent, TrackingRun

PREFIX = "/api/tracking"
router = APIRouter(prefix="/tracking", tags=["tracking"])
# Every call acts in the caller's project (`scope.home`): a runId names a run only inside one project, so an
# admin credential without a project reads and writes the default project here.
read = [Depends(allow(Permission.READ))]
track = [Depends(allow(Permission.TRACK))]


@router.post("/event", dependencies=track, openapi_extra=openapi_body(EventBody))
async def record_event(request: Request, core: Services, scope: Scoped) -> Response:
    await core.tracking.record([event_of(await request.body())], project_id=scope.home)
    return Response(status_code=200)  # spec 1: 200 with no body


@router.post("/batch", dependencies=track, openapi_extra=openapi_body(BatchBody))
async def record_batch(request: Request, core: Services, scope: Scoped) -> Response:
    batch = batch_of(await request.body())
    accepted = await core.tracking.record(batch.events, logs=batch.logs, samples=batch.samples,
                                          project_id=scope.home)
    return JSONResponse({"accepted": accepted})


@router.get("/runs", dependencies=read)
async def list_runs(core: Services, scope: Scoped, limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000,
                    offset: Annotated[int, Query(ge=0, le=2**62)] = 0) -> Response:
    runs = await core.tracking.list_runs(limit=limit, offset=offset, project_id=scope.home)
    return JSONResponse([_run(r) for r in runs])


@router.get("/runs/{run_id}/events", dependencies=read)
async def list_events(core: Services, scope: Scoped,
                      run_id: Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL)],
                      limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST) -> Response:
    events = await core.tracking.events_of(run_id, limit=limit, project_id=scope.home)
    return JSONResponse([_event(e) for e in events])


def _run(run: TrackingRun) -> dict[str, Any]:
    return {"id": run.id, "runId": run.run_id, "functionName": run.function_name, "startTime": _instant(run.start_time),
            "status": run.status}


def _instant(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as spec 1 shows ("2025-07-29T01:30:00.123Z")."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(event: StoredEvent) -> dict[str, Any]:
    data = {} if event.data is None else event.data
    return {"id": event.id, "runId": event.run_id, "functionName": event.function_name,
            "eventName": event.event_name, "eventData": orjson.dumps(data).decode(),
            "timestamp": _instant(event.timestamp)}
