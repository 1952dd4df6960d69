"""The job tracking read model (spec 5): a run seen as a job inside one tenant's project.

Every call names its job by `{tenantId}/{projectId}/{jobId}` GUIDs. An unknown or malformed GUID, a
project outside that tenant, a job outside that project, or a project the credential is not scoped to
all raise the same NotFound, so a 404 never tells which part was wrong. The answers are spec 5's
documents (camelCase keys, instants as aware datetimes, null where taskyard does not know a figure);
timeline, metrics and dependencies are built in `job_views`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.errors import NotFound, ValidationFailed
from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus
from taskyard.services import job_views
from taskyard.services.job_figures import (
    RATE_METRICS,
    STATUS_FILTER,
    bytes_text,
    current_stage,
    duration_text,
    elapsed,
    instant_text,
    job_eta,
    job_status,
    number,
    percentage,
    processing_rate,
    rate_text,
    remaining_seconds,
    size_text,
    stage_eta,
    stage_progress,
    stage_seconds,
    stage_status,
    task_figure,
)
from taskyard.services.scope import Scope
from taskyard.services.tenancy import Project
from taskyard.storage import job_tracking as rows

if TYPE_CHECKING:
    from taskyard.services.core import Core

LOG_LIMIT_DEFAULT = 1000
LOG_LIMIT_MAX = 10_000
BATCH_MAX = 500
JOB_NOT_FOUND = "job not found"
PROJECT_NOT_FOUND = "project not found"
QUALITY_FIELDS = {"dataQualityScore": "data_quality_score", "validationsPassed": "validations_passed",
                  "validationsFailed": "validations_failed"}


def canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def check_level(level: str) -> str:
    word = (level or "").upper()
    if word == "WARNING":
        word = "WARN"
    if word not in rows.LEVEL_ORDER:
        raise ValidationFailed("level must be one of DEBUG, INFO, WARN, ERROR", field="level", rule="one_of",
                               value=level)
    return word


class JobTrackingService:
    def __init__(self, core: Core) -> None:
        self.core = core

    # -- resolution ------------------------------------------------------------------------------------

    async def project(self, tenant_uuid: str, project_uuid: str, scope: Scope | None = None, *,
                      message: str = PROJECT_NOT_FOUND) -> Project:
        try:
            project = await self.core.tenancy.get_project(tenant_uuid, project_uuid)
        except NotFound:
            raise NotFound(message) from None
        if scope is not None and scope.project_id is not None and scope.project_id != project.id:
            raise NotFound(message)
        return project

    async def _job(self, conn: AsyncConnection, project: Project, job_uuid: str) -> Run:
        wanted = canonical_uuid(job_uuid)
        run = await rows.run_in_project(conn, project.id, wanted) if wanted else None
        if run is None:
            raise NotFound(JOB_NOT_FOUND)
        return run

    async def _resolve(self, tenant_uuid: str, project_uuid: str, job_uuid: str, scope: Scope | None) -> Project:
        return await self.project(tenant_uuid, project_uuid, scope, message=JOB_NOT_FOUND)

    # -- logs ------------------------------------------------------------------------------------------

    async def logs(self, tenant_uuid: str, project_uuid: str, job_uuid: str, *, level: str = "INFO",
                   since: datetime | None = None, until: datetime | None = None, limit: int = LOG_LIMIT_DEFAULT,
                   raw: bool = False, scope: Scope | None = None) -> dict[str, Any]:
        minimum = check_level(level)
        if not 1 <= limit <= LOG_LIMIT_MAX:
            raise ValidationFailed(f"limit must be between 1 and {LOG_LIMIT_MAX}", field="limit",
                                   rule="max" if limit > LOG_LIMIT_MAX else "min", value=limit)
        project = await self._resolve(tenant_uuid, project_uuid, job_uuid, scope)
        now = self.core.clock()
        async with self.core.db.read() as conn:
            run = await self._job(conn, project, job_uuid)
            summary = await rows.log_summary(conn, run.id)
            lines = await rows.logs(conn, run.id, minimum=minimum, since=since, until=until, limit=limit)
            stages = (await rows.stages(conn, [run.id]))[run.id]
            worker = (await rows.latest_samples(conn, [run.id], source="worker"))[run.id]
            task = (await rows.latest_samples(conn, [run.id], source="task", names=RATE_METRICS))[run.id]
        counts = summary["counts"]
        entries = [_log_entry(line) for line in lines]
        return {
            "jobId": run.uuid, "jobName": run.task_name, "jobStatus": job_status(run),
            "logsSummary": {
                "totalEntries": summary["total"], "debugEntries": counts["DEBUG"], "infoEntries": counts["INFO"],
                "warnEntries": counts["WARN"], "errorEntries": counts["ERROR"],
                "timeRange": {"startTime": summary["first"], "endTime": summary["last"]},
            },
            "logs": [_raw_line(e) for e in entries] if raw else entries,
            "executionMetrics": _execution_metrics(run, stages, worker, task, now),
        }

    # -- progress --------------------------------------------------------------------------------------

    async def progress(self, tenant_uuid: str, project_uuid: str, job_uuid: str, *,
                       scope: Scope | None = None) -> dict[str, Any]:
        project = await self._resolve(tenant_uuid, project_uuid, job_uuid, scope)
        now = self.core.clock()
        async with self.core.db.read() as conn:
            run = await self._job(conn, project, job_uuid)
            stages = (await rows.stages(conn, [run.id]))[run.id]
            worker = (await rows.latest_samples(conn, [run.id], source="worker"))[run.id]
            task = (await rows.latest_samples(conn, [run.id], source="task"))[run.id]
            summary = await rows.log_summary(conn, run.id)
        left = remaining_seconds(run, now)
        quality: dict[str, Any] = {key: task_figure(task, key, snake) for key, snake in QUALITY_FIELDS.items()}
        quality["warningsGenerated"] = summary["counts"]["WARN"]
        quality["errorsEncountered"] = summary["counts"]["ERROR"]
        return {
            "jobId": run.uuid, "jobName": run.task_name, "status": job_status(run),
            "overallProgress": {
                "percentage": number(percentage(run)), "startTime": run.started_at,
                "elapsedTime": duration_text(elapsed(run, now)), "estimatedRemaining": duration_text(left),
                "estimatedCompletion": job_eta(run, now),
            },
            "stages": [stage_out(s, now) for s in stages],
            "currentActivity": run.current_activity,
            "resourceUsage": resource_usage(worker, processing_rate(stages, task, now)),
            "qualityMetrics": quality,
        }

    # -- batch -----------------------------------------------------------------------------------------

    async def batch(self, tenant_uuid: str, project_uuid: str, *, job_ids: Sequence[str] | None = None,
                    status: str | None = None, submitted_by: str | None = None, include_metrics: bool = False,
                    scope: Scope | None = None) -> dict[str, Any]:
        if job_ids is not None and len(job_ids) > BATCH_MAX:
            raise ValidationFailed(f"at most {BATCH_MAX} jobIds", field="jobIds", rule="max_items",
                                   value=len(job_ids))
        statuses: list[str] | None = None
        if status is not None:
            if status.lower() not in STATUS_FILTER:
                raise ValidationFailed("status must be one of Running, Queued, Completed, Failed, Cancelled",
                                       field="status", rule="one_of", value=status)
            statuses = [s.value for s in STATUS_FILTER[status.lower()]]
        uuids = None if job_ids is None else [u for u in (canonical_uuid(j) for j in job_ids) if u]
        project = await self.project(tenant_uuid, project_uuid, scope)
        now = self.core.clock()
        async with self.core.db.read() as conn:
            found = await rows.list_runs(conn, project.id, uuids=uuids, statuses=statuses,
                                         submitted_by=submitted_by, limit=BATCH_MAX)
            ids = [r.id for r in found]
            positions = await rows.queue_positions(conn, project.id,
                                                   [r.id for r in found if r.status is RunStatus.QUEUED])
            stages = await rows.stages(conn, ids)
            worker = await rows.latest_samples(conn, ids, source="worker") if include_metrics else {}
            task = await rows.latest_samples(conn, ids, source="task", names=RATE_METRICS)
            capacity = await rows.capacity(conn, now)
        jobs = []
        for run in found:
            stage = current_stage(stages[run.id])
            job: dict[str, Any] = {
                "jobId": run.uuid, "jobName": run.task_name, "status": job_status(run),
                "progress": number(percentage(run)) if run.started_at or run.progress is not None else 0,
                "startTime": run.started_at, "estimatedCompletion": job_eta(run, now),
                "currentStage": stage["name"] if stage else None, "submittedBy": run.submitted_by,
                "priority": run.priority.value.capitalize(), "queuePosition": positions.get(run.id),
            }
            if include_metrics:
                samples = worker.get(run.id, {})
                job["resourceUsage"] = {
                    "cpu": number(samples.get("cpu")), "memory": size_text(samples.get("memory_mb")),
                    "processingRate": rate_text(processing_rate(stages[run.id], task[run.id], now)),
                }
            jobs.append(job)
        summary = {"running": 0, "queued": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for job in jobs:
            summary[job["status"].lower()] += 1
        return {"trackingTime": now, "jobCount": len(jobs), "summary": summary, "jobs": jobs,
                "systemHealth": system_health(capacity)}

    # -- timeline, metrics, dependencies (built in job_views) -------------------------------------------

    async def timeline(self, tenant_uuid: str, project_uuid: str, job_uuid: str, *, include_sub_events: bool = False,
                       granularity: str = "minutes", scope: Scope | None = None) -> dict[str, Any]:
        granularity = job_views.check_granularity(granularity)
        project = await self._resolve(tenant_uuid, project_uuid, job_uuid, scope)
        async with self.core.db.read() as conn:
            run = await self._job(conn, project, job_uuid)
            return await job_views.timeline(conn, run, self.core.clock(), include_sub_events=include_sub_events,
                                            granularity=granularity)

    async def metrics(self, tenant_uuid: str, project_uuid: str, job_uuid: str, *, interval: str = "5m",
                      metrics: str | None = None, include_history: bool = False,
                      scope: Scope | None = None) -> dict[str, Any]:
        seconds = job_views.check_interval(interval)
        groups = job_views.check_groups(metrics)
        project = await self._resolve(tenant_uuid, project_uuid, job_uuid, scope)
        async with self.core.db.read() as conn:
            run = await self._job(conn, project, job_uuid)
            return await job_views.metrics(conn, run, self.core.clock(), interval=seconds, groups=groups,
                                           include_history=include_history)

    async def dependencies(self, tenant_uuid: str, project_uuid: str, job_uuid: str, *,
                           scope: Scope | None = None) -> dict[str, Any]:
        project = await self._resolve(tenant_uuid, project_uuid, job_uuid, scope)
        async with self.core.db.read() as conn:
            run = await self._job(conn, project, job_uuid)
            return await job_views.dependencies(conn, run, self.core.clock())


# -- shared pieces ------------------------------------------------------------------------------------------

def _log_entry(line: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": line["timestamp"], "level": rows.level_of(line["level"]),
            "component": line.get("component"), "stage": line.get("stage"), "message": line["message"],
            "details": line.get("details")}


def _raw_line(entry: dict[str, Any]) -> str:
    """"2024-01-20T10:30:15Z INFO [component] message"; a line without a component shows "-"."""
    return f"{instant_text(entry['timestamp'])} {entry['level']} [{entry['component'] or '-'}] {entry['message']}"


def _execution_metrics(run: Run, stages: list[dict[str, Any]], worker: dict[str, float], task: dict[str, float],
                       now: datetime) -> dict[str, Any]:
    stage = current_stage(stages)
    return {
        "currentStage": stage["name"] if stage else None,
        "stageProgress": number(stage_progress(stage)) if stage else None,
        "overallProgress": number(percentage(run)),
        "processingRate": rate_text(processing_rate(stages, task, now)),
        "memoryUsage": size_text(worker.get("memory_mb")),
        "cpuUsage": number(worker.get("cpu")),
        "estimatedCompletion": job_eta(run, now),
    }


def stage_out(stage: dict[str, Any], now: datetime) -> dict[str, Any]:
    status = stage_status(stage.get("status"))
    return {
        "stageName": stage["name"], "stageOrder": stage["stage_order"], "status": status,
        "progress": number(stage_progress(stage)), "startTime": stage.get("started_at"),
        "endTime": stage.get("ended_at"),
        "duration": duration_text(stage_seconds(stage, now)) if stage.get("ended_at") else None,
        "recordsProcessed": stage.get("records_processed"), "totalRecords": stage.get("total_records"),
        "metrics": stage.get("metrics"), "estimatedEndTime": stage_eta(stage, now),
    }


def resource_usage(worker: dict[str, float], rate: float | None) -> dict[str, Any]:
    disk = [worker[n] for n in ("disk_read_bytes", "disk_write_bytes") if n in worker]
    network = [worker[n] for n in ("network_bytes_sent", "network_bytes_recv") if n in worker]
    return {
        "memoryUsage": size_text(worker.get("memory_mb")), "cpuUsage": number(worker.get("cpu")),
        "diskUsage": bytes_text(sum(disk)) if disk else None,
        "networkIO": bytes_text(sum(network)) if network else None,
        "processingRate": rate_text(rate),
    }


def system_health(capacity: dict[str, Any]) -> dict[str, Any]:
    """From the live worker rows: running runs over their slots, and what the queue leaves free."""
    slots, running, queued = capacity["slots"], capacity["running"], capacity["queued"]
    free = max(slots - running, 0)
    if queued <= free:
        queue_health = "Good"
    elif slots and queued <= slots:
        queue_health = "Fair"
    else:
        queue_health = "Poor"
    share = free / slots if slots else 0.0
    availability = "High" if share >= 0.5 else "Medium" if share >= 0.2 else "Low" if share > 0 else "None"
    spare = max(free - queued, 0)
    return {
        "overallLoad": number(100.0 * min(running, slots) / slots) if slots else None,
        "queueHealth": queue_health, "resourceAvailability": availability,
        "estimatedCapacity": f"{spare} additional job" + ("" if spare == 1 else "s"),
        "activeWorkers": capacity["workers"],
    }
