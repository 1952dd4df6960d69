"""/api/runs: run history, detail with logs, restart, abort."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from taskyard.api.envelope import ok
from taskyard.api.scheduler import shapes
from taskyard.api.scheduler.common import MAX_ID, NO_NUL, Paging, RunId, Services
from taskyard.api.security import Scoped, allow
from taskyard.domain.errors import ValidationFailed
from taskyard.services.access import Permission

router = APIRouter(prefix="/runs", tags=["runs"])
DAY = r"^\d{4}-\d{2}-\d{2}$"
read = [Depends(allow(Permission.READ))]
write = [Depends(allow(Permission.WRITE))]


@router.get("", dependencies=read)
async def list_runs(request: Request, core: Services, paging: Paging, scope: Scoped,
                    task_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                    status: Annotated[str | None, Query(max_length=32)] = None,
                    worker_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
                    start_date: Annotated[str | None, Query(pattern=DAY, description="YYYY-MM-DD")] = None,
                    end_date: Annotated[str | None, Query(pattern=DAY, description="YYYY-MM-DD")] = None) -> Response:
    start, end = _day(start_date, "start_date"), _day(end_date, "end_date")
    statuses = None
    if status is not None:
        statuses = shapes.STATUS_FILTER.get(status.lower())
        if statuses is None:
            raise ValidationFailed(f"unknown run status '{status}'", field="status", rule="one_of", value=status)
    if start and end and end < start:
        raise ValidationFailed("end_date is before start_date", field="end_date", rule="after_start",
                               value=end_date)
    found = await core.runs.list_page(task_id=task_id, status=statuses, worker_id=worker_id, start_date=start,
                                      end_date=end, page=paging, scope=scope)
    return ok(request, {**shapes.page([shapes.run_summary(r) for r in found.runs], found.total, paging.page,
                                      paging.size), "total_exact": found.exact})


def _day(value: str | None, field: str) -> date | None:
    """Exactly YYYY-MM-DD (no times, no timestamps), and a real calendar day."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(f"{field} is not a date: {exc}", field=field, rule="date", value=value) from exc


@router.get("/{run_id}", dependencies=read)
async def get_run(request: Request, run_id: RunId, core: Services, scope: Scoped) -> Response:
    return ok(request, shapes.run_detail(await core.runs.get(run_id, scope=scope)))


@router.get("/{run_id}/logs", dependencies=read)
async def get_run_logs(request: Request, run_id: RunId, core: Services, scope: Scoped,
                       after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                       limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Response:
    run, lines = await core.runs.logs(run_id, after_id=after, limit=limit, scope=scope)
    return ok(request, {"run_id": run.id, "status": shapes.STATUS_WORD[run.status], "state": run.status.value,
                        "items": [shapes.log_line(line) for line in lines],
                        "next_after": lines[-1]["id"] if lines else after})


@router.post("/{run_id}/restart", dependencies=write)
async def restart_run(request: Request, run_id: RunId, core: Services, scope: Scoped) -> Response:
    run = await core.runs.restart(run_id, scope=scope)
    return ok(request, {"original_run_id": run_id, "new_run_id": run.id, "uuid": run.uuid,
                        "status": shapes.STATUS_WORD[run.status], "started_at": run.created_at})


@router.post("/{run_id}/abort", dependencies=write)
async def abort_run(request: Request, run_id: RunId, core: Services, scope: Scoped) -> Response:
    run = await core.runs.abort(run_id, scope=scope)
    return ok(request, {"id": run.id, "status": shapes.STATUS_WORD[run.status], "completed_at": run.completed_at,
                        "message": "run aborted"})
