"""/api/tasks: task definitions, triggers, pause and resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.responses import Response

from taskyard.api.envelope import ok
from taskyard.api.scheduler import shapes
from taskyard.api.scheduler.common import NO_NUL, Paging, Services, TaskId, idempotent
from taskyard.api.scheduler.schemas import TaskCreate, TaskUpdate, TriggerBody
from taskyard.api.security import Scoped, allow
from taskyard.services.access import Permission
from taskyard.services.tasks import TaskSpec

router = APIRouter(prefix="/tasks", tags=["tasks"])
read = [Depends(allow(Permission.READ))]
write = [Depends(allow(Permission.WRITE))]


@router.post("", status_code=201, dependencies=write)
async def create_task(request: Request, body: TaskCreate, core: Services, scope: Scoped) -> Response:
    async def produce() -> Response:
        task = await core.tasks.create(TaskSpec(**body.model_dump()), scope=scope)
        return ok(request, shapes.task_full(task), 201)

    return await idempotent(request, produce)


@router.get("", dependencies=read)
async def list_tasks(request: Request, core: Services, paging: Paging, scope: Scoped,
                     status: Annotated[str | None, Query(max_length=32)] = None,
                     task_type: Annotated[str | None, Query(max_length=64)] = None,
                     priority: Annotated[str | None, Query(max_length=16)] = None,
                     search: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None) -> Response:
    tasks, total = await core.tasks.list(status=status, task_type=task_type, priority=priority, search=search,
                                         page=paging, scope=scope)
    return ok(request, shapes.page([shapes.task_summary(t) for t in tasks], total, paging.page, paging.size))


@router.get("/{task_id}", dependencies=read)
async def get_task(request: Request, task_id: TaskId, core: Services, scope: Scoped) -> Response:
    detail = await core.tasks.get(task_id, scope=scope)
    return ok(request, {**shapes.task_full(detail.task), "statistics": detail.statistics})


@router.put("/{task_id}", dependencies=write)
async def update_task(request: Request, task_id: TaskId, body: TaskUpdate, core: Services,
                      scope: Scoped) -> Response:
    task = await core.tasks.update(task_id, body.changes(), scope=scope)
    return ok(request, shapes.task_full(task))


@router.delete("/{task_id}", dependencies=write)
async def delete_task(request: Request, task_id: TaskId, core: Services, scope: Scoped) -> Response:
    deleted = await core.tasks.delete(task_id, scope=scope)
    return ok(request, {"message": "task deleted", "deleted_id": deleted})


@router.post("/{task_id}/trigger", dependencies=write)
async def trigger_task(request: Request, task_id: TaskId, core: Services, scope: Scoped,
                       body: Annotated[TriggerBody | None, Body()] = None) -> Response:
    spec = body or TriggerBody()

    async def produce() -> Response:
        triggered = await core.runs.trigger(task_id, parameters=spec.parameters, priority=spec.priority,
                                            timeout_seconds=spec.timeout_seconds, scope=scope)
        return ok(request, shapes.trigger_answer(triggered.run, triggered.average_execution_time))

    return await idempotent(request, produce)


@router.post("/{task_id}/pause", dependencies=write)
async def pause_task(request: Request, task_id: TaskId, core: Services, scope: Scoped) -> Response:
    return ok(request, shapes.task_status(await core.tasks.pause(task_id, scope=scope)))


@router.post("/{task_id}/resume", dependencies=write)
async def resume_task(request: Request, task_id: TaskId, core: Services, scope: Scoped) -> Response:
    return ok(request, shapes.task_status(await core.tasks.resume(task_id, scope=scope)))
