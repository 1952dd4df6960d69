"""/api/workers: the worker registry and the protocol workers speak (poll, report, heartbeat)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from taskyard.api.envelope import ok
from taskyard.api.scheduler import shapes
from taskyard.api.scheduler.common import NO_NUL, Paging, Services, WorkerId
from taskyard.api.scheduler.schemas import (
    HeartbeatBody,
    PollBody,
    ReportBody,
    RunReportBody,
    WorkerRegister,
    WorkerUpdate,
)
from taskyard.api.security import Scoped, allow
from taskyard.domain.errors import StaleAttempt
from taskyard.services.access import Permission
from taskyard.services.workers import Heartbeat, PollResult, Registration, RunReport

router = APIRouter(prefix="/workers", tags=["workers"])
read = [Depends(allow(Permission.READ))]
write = [Depends(allow(Permission.WRITE))]
work = [Depends(allow(Permission.WORK))]


@router.get("", dependencies=read)
async def list_workers(request: Request, core: Services, paging: Paging, scope: Scoped,
                       status: Annotated[str | None, Query(max_length=16)] = None,
                       task_type: Annotated[str | None, Query(max_length=64)] = None,
                       hostname: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None) -> Response:
    workers, total = await core.workers.list(status=status, task_type=task_type, hostname=hostname, page=paging,
                                             scope=scope)
    return ok(request, shapes.page([shapes.worker_out(w) for w in workers], total, paging.page, paging.size))


@router.post("", status_code=201, dependencies=work)
async def register_worker(request: Request, body: WorkerRegister, core: Services, scope: Scoped) -> Response:
    worker = await core.workers.register(Registration(
        hostname=body.hostname, ip_address=body.ip_address, port=body.port, task_types=body.task_types,
        max_concurrent_tasks=body.max_concurrent_tasks, metadata=body.metadata, worker_id=body.id), scope=scope)
    return ok(request, {**shapes.worker_out(worker), "lease_seconds": core.config.lease_seconds}, 201)


@router.get("/{worker_id}", dependencies=read)
async def get_worker(request: Request, worker_id: WorkerId, core: Services, scope: Scoped) -> Response:
    return ok(request, shapes.worker_detail(await core.workers.get(worker_id, scope=scope)))


@router.put("/{worker_id}", dependencies=write)
async def update_worker(request: Request, worker_id: WorkerId, body: WorkerUpdate, core: Services,
                        scope: Scoped) -> Response:
    worker = await core.workers.update(worker_id, body.model_dump(exclude_none=True), scope=scope)
    return ok(request, shapes.worker_out(worker))


@router.delete("/{worker_id}", dependencies=work)
async def unregister_worker(request: Request, worker_id: WorkerId, core: Services, scope: Scoped) -> Response:
    gone = await core.workers.unregister(worker_id, scope=scope)
    return ok(request, {"message": "worker unregistered", "worker_id": gone})


@router.post("/{worker_id}/heartbeat", dependencies=work)
async def heartbeat(request: Request, worker_id: WorkerId, body: HeartbeatBody, core: Services,
                    scope: Scoped) -> Response:
    ack = await core.workers.heartbeat(worker_id, Heartbeat(**body.model_dump()), scope=scope)
    return ok(request, {"worker_id": ack.worker.id, "status": ack.worker.status.value,
                        "last_heartbeat": ack.worker.last_heartbeat, "message": "heartbeat received",
                        "abort_runs": ack.abort_runs, "lease_seconds": core.config.lease_seconds})


@router.post("/{worker_id}/poll", dependencies=work)
async def poll(request: Request, worker_id: WorkerId, body: PollBody, core: Services, scope: Scoped) -> Response:
    result = await core.workers.poll(worker_id, capacity=body.capacity, running=body.running, wait=body.wait,
                                     reports=_run_reports(body.reports), scope=scope)
    return ok(request, _poll_answer(result))


@router.post("/{worker_id}/report", dependencies=work)
async def report(request: Request, worker_id: WorkerId, body: ReportBody, core: Services, scope: Scoped) -> Response:
    outcome = await core.workers.report(worker_id, _run_reports(body.reports), scope=scope)
    if len(body.reports) == 1 and outcome.rejected and outcome.rejected[0]["code"] == StaleAttempt.code:
        raise StaleAttempt(outcome.rejected[0]["message"], run_id=outcome.rejected[0]["run_id"])
    return ok(request, {"accepted": outcome.accepted, "rejected": outcome.rejected})


def _run_reports(bodies: list[RunReportBody]) -> list[RunReport]:
    return [RunReport(run_id=r.run_id, attempt=r.attempt, outcome=r.outcome, result=r.result,
                      error_message=r.error_message, exit_code=r.exit_code) for r in bodies]


def _poll_answer(result: PollResult) -> dict[str, object]:
    runs = []
    for run in result.runs:
        command = result.commands.get(run.task_id)
        runs.append({
            "run_id": run.id, "uuid": run.uuid, "attempt": run.attempt, "task_id": run.task_id,
            "task_name": run.task_name, "task_type": run.task_type,
            "command": command.command if command else "", "arguments": command.arguments if command else [],
            "metadata": command.metadata if command else {}, "parameters": run.parameters,
            "timeout_seconds": run.timeout_seconds, "priority": run.priority.value,
            "lease_expires_at": run.lease_expires_at,
        })
    answer: dict[str, object] = {"runs": runs, "abort_runs": result.abort_runs, "status": result.status.value,
                                 "lease_seconds": result.lease_seconds}
    if result.report is not None:
        answer["report"] = {"accepted": result.report.accepted, "rejected": result.report.rejected}
    return answer
