"""Domain objects to the JSON shapes of spec 2. Canonical statuses are translated here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from taskyard.domain.models import Run, Task, Worker
from taskyard.domain.status import RunStatus
from taskyard.services.runs import RunDetail
from taskyard.services.workers import WorkerDetail

# Spec 2 has one word for "not started yet"; the canonical split (pending/queued) stays internal.
STATUS_WORD = {RunStatus.PENDING: "pending", RunStatus.QUEUED: "pending", RunStatus.RUNNING: "running",
               RunStatus.COMPLETED: "completed", RunStatus.FAILED: "failed", RunStatus.ABORTED: "aborted"}
STATUS_FILTER = {"pending": ["pending", "queued"], "queued": ["queued"], "waiting": ["pending"],
                 "running": ["running"], "completed": ["completed"], "failed": ["failed"],
                 "aborted": ["aborted"]}


def task_summary(task: Task) -> dict[str, Any]:
    return {"id": task.id, "uuid": task.uuid, "name": task.name, "description": task.description,
            "task_type": task.task_type, "status": task.status.value, "priority": task.priority.value,
            "schedule": task.schedule, "created_at": task.created_at, "next_run_at": task.next_run_at,
            "last_run_at": task.last_run_at, "tags": task.tags}


def task_full(task: Task) -> dict[str, Any]:
    return {
        "id": task.id, "uuid": task.uuid, "name": task.name, "description": task.description,
        "task_type": task.task_type, "executor": task.executor, "command": task.command,
        "arguments": task.arguments, "schedule": task.schedule, "timezone": task.timezone,
        "catchup": task.catchup, "priority": task.priority.value, "retry_count": task.retry_count,
        "timeout_seconds": task.timeout_seconds, "status": task.status.value,
        "created_at": task.created_at, "updated_at": task.updated_at, "last_run_at": task.last_run_at,
        "next_run_at": task.next_run_at, "dependencies": task.dependencies, "tags": task.tags,
        "metadata": task.metadata,
    }


def task_status(task: Task) -> dict[str, Any]:
    return {"id": task.id, "status": task.status.value, "updated_at": task.updated_at,
            "next_run_at": task.next_run_at}


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "uuid": run.uuid, "task_id": run.task_id, "task_name": run.task_name,
        "worker_id": run.worker_id, "status": STATUS_WORD[run.status], "state": run.status.value,
        "priority": run.priority.value, "trigger": run.trigger.value, "attempt": run.attempt,
        "started_at": run.started_at, "completed_at": run.completed_at, "result": run.result,
        "error_message": run.error_message, "retry_count": run.retry_count, "created_at": run.created_at,
        "scheduled_for": run.scheduled_for,
    }


def run_detail(detail: RunDetail) -> dict[str, Any]:
    run = detail.run
    return {
        **run_summary(run),
        "worker_hostname": run.worker_hostname, "execution_time": run.execution_time,
        "parameters": run.parameters, "timeout_seconds": run.timeout_seconds, "max_retries": run.max_retries,
        "exit_code": run.exit_code, "queued_at": run.queued_at, "available_at": run.available_at,
        "lease_expires_at": run.lease_expires_at, "restarted_from": run.restarted_from,
        "waiting_on": detail.waiting_on,
        "logs": [log_line(line) for line in detail.logs],
        "logs_total": detail.logs_total,
        "history": [{"status": h["status"], "attempt": h["attempt"], "at": h["at"], "worker_id": h["worker_id"],
                     "reason": h["reason"]} for h in detail.history],
    }


def log_line(line: dict[str, Any]) -> dict[str, Any]:
    return {"id": line["id"], "timestamp": line["timestamp"], "level": line["level"], "message": line["message"],
            "stream": line["stream"], "attempt": line["attempt"]}


def trigger_answer(run: Run, average_seconds: float | None) -> dict[str, Any]:
    estimate = run.created_at + timedelta(seconds=average_seconds) if average_seconds is not None else None
    return {"task_id": run.task_id, "run_id": run.id, "uuid": run.uuid, "status": STATUS_WORD[run.status],
            "worker_id": run.worker_id, "started_at": run.started_at, "estimated_completion": estimate}


def worker_out(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id, "hostname": worker.hostname, "ip_address": worker.ip_address, "port": worker.port,
        "task_types": worker.task_types, "max_concurrent_tasks": worker.max_concurrent_tasks,
        "current_task_count": worker.current_task_count, "status": worker.status.value,
        "last_heartbeat": worker.last_heartbeat, "registered_at": worker.registered_at,
        "load_average": worker.load_average, "memory_usage": worker.memory_usage,
        "cpu_usage": worker.cpu_usage, "metadata": worker.metadata,
    }


def worker_detail(detail: WorkerDetail) -> dict[str, Any]:
    return {
        **worker_out(detail.worker),
        "current_task_count": len(detail.current_runs),
        "current_tasks": [{"run_id": r.id, "task_id": r.task_id, "task_name": r.task_name,
                           "started_at": r.started_at, "status": STATUS_WORD[r.status]}
                          for r in detail.current_runs],
        "statistics": detail.statistics,
    }


def page(items: list[dict[str, Any]], total: int, page_no: int, size: int) -> dict[str, Any]:
    return {"items": items, "total": total, "page": page_no, "size": size,
            "total_pages": (total + size - 1) // size if total else 0}


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
