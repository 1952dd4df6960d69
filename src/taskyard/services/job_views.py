"""Timeline, metrics and dependencies of one job (spec 5), read inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.errors import ValidationFailed
from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus, TriggerKind
from taskyard.services import job_figures as fig
from taskyard.storage import job_tracking as rows

GRANULARITIES = ("seconds", "minutes", "major_events")
INTERVALS = {"1m": 60, "5m": 300, "15m": 900}
GROUPS = ("cpu", "memory", "disk", "network", "throughput")
# SDK event names that are not milestones; start/end/error are spec 1 lifecycle words run_history covers.
NOT_MILESTONES = ("progress", "stage_start", "stage_progress", "stage_end", "log", "metric", "start", "end",
                  "error")
FINAL_EVENT = {RunStatus.COMPLETED: "JobCompleted", RunStatus.FAILED: "JobFailed", RunStatus.ABORTED: "JobCancelled"}
LIFECYCLE = {"JobQueued", "JobStarted", "JobRetried", *FINAL_EVENT.values()}
STAGE_EVENTS = {"StageStarted", "StageCompleted", "StageFailed"}
TIMELINE_LOG_LINES = 1000


def check_granularity(value: str) -> str:
    if value not in GRANULARITIES:
        raise ValidationFailed("granularity must be one of seconds, minutes, major_events", field="granularity",
                               rule="one_of", value=value)
    return value


def check_interval(value: str) -> int:
    if value not in INTERVALS:
        raise ValidationFailed("interval must be one of 1m, 5m, 15m", field="interval", rule="one_of", value=value)
    return INTERVALS[value]


def check_groups(value: str | None) -> tuple[str, ...]:
    if value is None or not value.strip():
        return GROUPS
    chosen = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in GROUPS]
    if unknown:
        raise ValidationFailed(f"unknown metric '{unknown[0]}'; known: {', '.join(GROUPS)}", field="metrics",
                               rule="one_of", value=unknown[0])
    return tuple(g for g in GROUPS if g in chosen)


# -- timeline -------------------------------------------------------------------------------------------------

def _item(at: datetime, kind: str, description: str, details: Any, rank: int = 1) -> dict[str, Any]:
    return {"timestamp": at, "eventType": kind, "description": description, "details": details, "_rank": rank}


def _lifecycle(run: Run, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    previous: str | None = None
    for entry in history:
        status = RunStatus(entry["status"])
        at, attempt = entry["at"], entry["attempt"]
        if status in (RunStatus.PENDING, RunStatus.QUEUED):
            if previous == RunStatus.RUNNING:
                made.append(_item(at, "JobRetried", f"attempt {attempt} ended; the job is queued again",
                                  {"attempt": attempt, "reason": entry["reason"]}, 0))
            elif previous is None:
                waiting = status is RunStatus.PENDING
                made.append(_item(at, "JobQueued", "job waiting for its dependencies" if waiting else "job queued",
                                  {"priority": run.priority.value.capitalize(), "submittedBy": run.submitted_by,
                                   "trigger": run.trigger.value, "reason": entry["reason"]}, 0))
        elif status is RunStatus.RUNNING:
            made.append(_item(at, "JobStarted", f"attempt {attempt} started",
                              {"attempt": attempt, "workerNode": entry["worker_id"],
                               "submittedBy": run.submitted_by, "priority": run.priority.value.capitalize()}, 0))
        else:
            made.append(_item(at, FINAL_EVENT[status], f"job {fig.JOB_STATUS[status].lower()}",
                              {"attempt": attempt, "reason": entry["reason"] or run.error_message,
                               "exitCode": run.exit_code}, 2))
        previous = status
    return made


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else ({} if data is None else {"value": data})


def _stage_event(event: dict[str, Any], stages: dict[str, dict[str, Any]], now: datetime) -> dict[str, Any]:
    data = _data(event)
    name = str(data.get("stage") or data.get("stageName") or "")
    if event["name"] == "stage_start":
        return _item(event["timestamp"], "StageStarted", f"stage '{name}' started",
                     {"stageName": name, "stageOrder": data.get("order"), "totalRecords": data.get("totalRecords")})
    failed = str(data.get("status", "")).lower() in {"failed", "error"}
    stage = stages.get(name)
    details = {"stageName": name, "status": "Failed" if failed else "Completed",
               "recordsProcessed": data.get("recordsProcessed"),
               "actualDuration": fig.duration_text(fig.stage_seconds(stage, now)) if stage and stage.get("ended_at")
               else None}
    if failed:
        details["error"] = data.get("error")
    return _item(event["timestamp"], "StageFailed" if failed else "StageCompleted",
                 f"stage '{name}' {'failed' if failed else 'completed'}", details)


def _truncate(at: datetime, granularity: str) -> datetime:
    return at.replace(microsecond=0) if granularity == "seconds" else at.replace(second=0, microsecond=0)


def _progress_items(events: list[dict[str, Any]], granularity: str) -> list[dict[str, Any]]:
    """Progress sub-events, truncated to the granularity; within one bucket the last per stage wins."""
    kept: dict[tuple[datetime, str], dict[str, Any]] = {}
    for event in events:
        data = _data(event)
        at = _truncate(event["timestamp"], granularity)
        if event["name"] == "progress":
            pct = data.get("percentage")
            item = _item(at, "Progress", f"job {fig.number(pct) if pct is not None else '?'}% complete",
                         {"progress": pct, "message": data.get("message")})
            key = (at, "")
        else:
            name = str(data.get("stage") or "")
            done: Any = data.get("recordsProcessed")
            total: Any = data.get("totalRecords")
            known = isinstance(done, int | float) and isinstance(total, int | float) and total > 0
            item = _item(at, "Progress", f"stage '{name}': {done} records processed",
                         {"stageName": name, "progress": fig.number(100.0 * done / total) if known else None,
                          "recordsProcessed": done, "remainingRecords": total - done if known else None})
            key = (at, name)
        kept.pop(key, None)
        kept[key] = item
    return list(kept.values())


async def timeline(conn: AsyncConnection, run: Run, now: datetime, *, include_sub_events: bool,
                   granularity: str) -> dict[str, Any]:
    history = await rows.history(conn, run.id)
    events = await rows.events(conn, run.id, exclude=("log", "metric", "start", "end", "error"))
    stages = (await rows.stages(conn, [run.id]))[run.id]
    problems = await rows.problem_logs(conn, run.id, minimum="WARN", limit=TIMELINE_LOG_LINES)
    by_name = {s["name"]: s for s in stages}
    items = _lifecycle(run, history)
    progress: list[dict[str, Any]] = []
    for event in events:
        if event["name"] in ("stage_start", "stage_end"):
            items.append(_stage_event(event, by_name, now))
        elif event["name"] in ("progress", "stage_progress"):
            progress.append(event)
        elif event["name"] not in NOT_MILESTONES:
            items.append(_item(event["timestamp"], "Milestone", event["name"], _data(event)))
    for line in problems:
        level = rows.level_of(line["level"])
        items.append(_item(line["timestamp"], "Error" if level == "ERROR" else "Warning", line["message"][:500],
                           {"component": line.get("component"), "stage": line.get("stage"),
                            **(line.get("details") or {})}))
    if include_sub_events and granularity != "major_events":
        items.extend(_progress_items(progress, granularity))
    if granularity == "major_events":
        items = [i for i in items if i["eventType"] in LIFECYCLE | STAGE_EVENTS | {"Error"}]
    items.sort(key=lambda i: (i["timestamp"], i["_rank"]))
    for item in items:
        del item["_rank"]
    upcoming: list[dict[str, Any]] = []
    if not run.status.is_final:
        for stage in stages:
            eta = fig.stage_eta(stage, now)
            if eta is not None:
                upcoming.append({"estimatedTime": eta, "eventType": "StageCompletion",
                                 "description": f"stage '{stage['name']}' expected to complete"})
        job_eta = fig.job_eta(run, now)
        if job_eta is not None:
            upcoming.append({"estimatedTime": job_eta, "eventType": "JobCompletion",
                             "description": "job expected to complete"})
        upcoming.sort(key=lambda u: u["estimatedTime"])
    return {
        "jobId": run.uuid, "jobName": run.task_name,
        "timelineScope": {"startTime": run.started_at or run.created_at, "currentTime": now,
                          "endTime": run.completed_at if run.status.is_final else None, "granularity": granularity},
        "timeline": items, "upcomingEvents": upcoming,
    }


# -- metrics --------------------------------------------------------------------------------------------------

def _buckets(samples: list[dict[str, Any]], interval: int) -> list[tuple[datetime, dict[str, list[float]]]]:
    found: dict[datetime, dict[str, list[float]]] = {}
    for sample in samples:
        at: datetime = sample["timestamp"]
        start = datetime.fromtimestamp(int(at.timestamp()) // interval * interval, tz=at.tzinfo)
        found.setdefault(start, {}).setdefault(sample["name"], []).append(float(sample["value"]))
    return sorted(found.items())


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def _stage_at(stages: list[dict[str, Any]], at: datetime, until: datetime) -> str | None:
    """The stage running at some point of [at, until): the last one started before `until`."""
    live = [s for s in stages if s.get("started_at") is not None and s["started_at"] < until
            and (s.get("ended_at") is None or s["ended_at"] >= at)]
    return max(live, key=lambda s: s["started_at"])["name"] if live else None


def _history(samples: list[dict[str, Any]], stages: list[dict[str, Any]], interval: int,
             groups: tuple[str, ...]) -> list[dict[str, Any]]:
    points = []
    for start, values in _buckets(samples, interval):
        point: dict[str, Any] = {"timestamp": start}
        if "cpu" in groups:
            point["cpu"] = fig.number(_mean(values.get("cpu")))
        if "memory" in groups:
            memory = _mean(values.get("memory_mb"))
            point["memory"] = None if memory is None else round(memory / 1024, 2)  # GB, as the spec shows
        if "disk" in groups:
            point["diskReadBytes"] = max(values["disk_read_bytes"]) if "disk_read_bytes" in values else None
            point["diskWriteBytes"] = max(values["disk_write_bytes"]) if "disk_write_bytes" in values else None
        if "network" in groups:
            point["connections"] = fig.number(_mean(values.get("connections")))
        if "throughput" in groups:
            rate = next((values[n] for n in ("records_per_second", "recordsPerSecond") if n in values), None)
            point["recordsPerSecond"] = fig.number(_mean(rate))
        point["stage"] = _stage_at(stages, start, start + timedelta(seconds=interval))
        points.append(point)
    return points


def _trends(points: list[dict[str, Any]], groups: tuple[str, ...]) -> dict[str, Any]:
    def halves(key: str) -> tuple[list[float], list[float]]:
        values = [float(p[key]) for p in points if p.get(key) is not None]
        middle = len(values) // 2
        return values[:middle], values[len(values) - middle:] if middle else []

    found: dict[str, Any] = {}
    if "cpu" in groups:
        found["cpuTrend"] = fig.trend(*halves("cpu"), higher_is_better=False)
    if "memory" in groups:
        found["memoryTrend"] = fig.trend(*halves("memory"), higher_is_better=False)
    if "throughput" in groups:
        found["throughputTrend"] = fig.trend(*halves("recordsPerSecond"), higher_is_better=True)
    return found


async def metrics(conn: AsyncConnection, run: Run, now: datetime, *, interval: int, groups: tuple[str, ...],
                  include_history: bool) -> dict[str, Any]:
    stages = (await rows.stages(conn, [run.id]))[run.id]
    latest = (await rows.latest_samples(conn, [run.id], source="worker"))[run.id]
    task = (await rows.latest_samples(conn, [run.id], source="task"))[run.id]
    peaks = await rows.peak_samples(conn, run.id, ("memory_mb",))
    summary = await rows.log_summary(conn, run.id)
    series = await rows.worker_sample_series(conn, run.id, extra=("records_per_second", "recordsPerSecond"))
    host = await rows.worker(conn, run.worker_id) if run.worker_id else None
    resources: dict[str, Any] = {}
    if "cpu" in groups:
        cores = (host.metadata or {}).get("cpu_count") if host else None
        resources["cpu"] = {"usage": fig.number(latest.get("cpu")), "cores": cores}
    if "memory" in groups:
        resources["memory"] = {"used": fig.size_text(latest.get("memory_mb")),
                               "peak": fig.size_text(peaks.get("memory_mb"))}
    if "disk" in groups:
        resources["disk"] = {"reads": fig.bytes_text(latest.get("disk_read_bytes")),
                             "writes": fig.bytes_text(latest.get("disk_write_bytes"))}
    if "network" in groups:
        connections = latest.get("connections")
        resources["network"] = {"connections": None if connections is None else int(connections)}
    current: dict[str, Any] = {"resourceUtilization": resources}
    stage = fig.latest_stage(stages)
    if "throughput" in groups:
        processed = stage.get("records_processed") if stage else None
        current["processing"] = {
            "recordsPerSecond": fig.number(fig.processing_rate(stages, task, now)),
            "recordsProcessed": processed, "totalRecords": stage.get("total_records") if stage else None,
            "errorRate": round(summary["counts"]["ERROR"] / processed, 6) if processed else None,
            "retryRate": round((run.attempt - 1) / run.attempt, 6) if run.attempt > 0 else None,
        }
    words = [fig.stage_status(s.get("status")) for s in stages]
    finished = [fig.stage_seconds(s, now) for s in stages if s.get("ended_at") is not None]
    durations = [d for d in finished if d is not None]
    current["stages"] = {"completed": words.count("Completed"), "running": words.count("Running"),
                         "pending": words.count("Pending"),
                         "averageStageTime": fig.minutes_text(_mean(durations))}
    points = _history(series, stages, interval, groups)
    answer: dict[str, Any] = {"jobId": run.uuid, "metricsCollectionTime": now, "currentMetrics": current}
    if include_history:
        answer["historicalMetrics"] = points
    answer["performanceTrends"] = _trends(points, groups)
    answer["benchmarks"] = await _benchmarks(conn, run, now)
    return answer


async def _benchmarks(conn: AsyncConnection, run: Run, now: datetime) -> dict[str, Any] | None:
    """Against earlier completed runs of the same task; a running job is judged by its projected total."""
    spent = fig.elapsed(run, now)
    if run.status is RunStatus.RUNNING and spent is not None:
        left = fig.remaining_seconds(run, now)
        spent = spent + left if left is not None else spent
    if run.status.is_final and run.execution_time is not None:
        spent = run.execution_time
    if spent is None:
        return None
    compared = await rows.duration_comparison(conn, run, spent)
    if compared is None:
        return None
    n = compared["count"]
    faster_than = round(100 * compared["slower"] / n)
    slower_than = round(100 * compared["faster"] / n)
    return {
        "jobType": run.task_type, "comparedRuns": n,
        "averageJobDuration": fig.minutes_text(compared["mean"]),
        "currentPerformanceRank": f"{fig.ordinal(faster_than)} percentile",
        "similarJobsComparison": {"fasterThan": faster_than, "similarTo": 100 - faster_than - slower_than,
                                  "slowerThan": slower_than},
    }


# -- dependencies -----------------------------------------------------------------------------------------------

async def dependencies(conn: AsyncConnection, run: Run, now: datetime) -> dict[str, Any]:
    waiting_on, dependents = await rows.waits(conn, run.id)
    by_task = await rows.task_dependency_runs(conn, run)
    prerequisites = {r.id: (r, f"task '{run.task_name}' depends on task '{r.task_name}'") for r in by_task}
    prerequisites.update({r.id: (r, "this job waits for it to complete") for r in waiting_on})
    current_waits = {r.id for r in waiting_on}
    prerequisite_jobs = [{"jobId": r.uuid, "jobName": r.task_name, "status": fig.job_status(r),
                          "completedAt": r.completed_at, "dependency": why}
                         for r, why in sorted(prerequisites.values(), key=lambda p: p[0].id)]
    dependent_jobs = [{"jobId": r.uuid, "jobName": r.task_name, "status": fig.job_status(r),
                       "waitingFor": f"{run.task_name} ({run.uuid})"} for r in dependents]
    resources: list[dict[str, Any]] = []
    if run.worker_id:
        held = run.status is RunStatus.RUNNING
        resources.append({"resourceType": "ComputeNode", "resourceId": run.worker_id,
                          "status": "Allocated" if held else "Released", "allocatedAt": run.started_at})
    blocking: list[dict[str, Any]] = []
    for r, _ in sorted(prerequisites.values(), key=lambda p: p[0].id):
        if r.id in current_waits:
            blocking.append({"condition": f"waiting on dependency {r.task_name} ({r.uuid})", "status": "Active",
                             "resolvedAt": None})
        elif run.status is not RunStatus.PENDING and r.status is RunStatus.COMPLETED:
            blocking.append({"condition": f"waiting on dependency {r.task_name} ({r.uuid})", "status": "Resolved",
                             "resolvedAt": r.completed_at})
    started = await rows.first_started(conn, run.id)
    if run.status is RunStatus.QUEUED:
        blocking.append({"condition": _queued_condition(run, now), "status": "Active", "resolvedAt": None})
    elif started is not None:
        blocking.append({"condition": "waiting for a free worker", "status": "Resolved", "resolvedAt": started})
    nodes = [{"id": r.uuid, "type": "PrerequisiteJob", "status": fig.job_status(r)}
             for r, _ in sorted(prerequisites.values(), key=lambda p: p[0].id)]
    nodes.append({"id": run.uuid, "type": "CurrentJob", "status": fig.job_status(run)})
    nodes += [{"id": r.uuid, "type": "DependentJob", "status": fig.job_status(r)} for r in dependents]
    edges = [{"from": r.uuid, "to": run.uuid, "type": "prerequisite"}
             for r, _ in sorted(prerequisites.values(), key=lambda p: p[0].id)]
    edges += [{"from": run.uuid, "to": r.uuid, "type": "dependency"} for r in dependents]
    return {
        "jobId": run.uuid,
        "dependencies": {"prerequisiteJobs": prerequisite_jobs, "resourceDependencies": resources,
                         "dependentJobs": dependent_jobs},
        "blockingConditions": blocking,
        "dependencyGraph": {"nodes": nodes, "edges": edges},
    }


def _queued_condition(run: Run, now: datetime) -> str:
    """Why a queued run is not running yet: a cron run created ahead waits for its slot, a retry for its
    backoff to end, anything else for a worker."""
    if run.available_at is None or run.available_at <= now:
        return "waiting for a free worker"
    if run.trigger is TriggerKind.CRON and run.retry_count == 0:
        return "waiting for its cron slot at " + fig.instant_text(run.available_at)
    return "retry backoff until " + fig.instant_text(run.available_at)
