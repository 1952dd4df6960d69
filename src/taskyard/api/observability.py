"""What the server knows about itself: its own log records, request rates, Prometheus metrics."""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskyard.domain.models import Run

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
LEVEL_WORD = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
              logging.CRITICAL: "error"}


class SystemLogBuffer(logging.Handler):
    """The newest structured records of this server process, for /api/system/logs."""

    def __init__(self, capacity: int) -> None:
        super().__init__(logging.DEBUG)
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            ctx = getattr(record, "ctx", None)
            self.records.append({
                "timestamp": datetime.fromtimestamp(record.created, UTC),
                "level": LEVEL_WORD.get(record.levelno, "info"),
                "levelno": record.levelno,
                "service": _service_of(record.name),
                "logger": record.name,
                "message": record.getMessage(),
                "metadata": ctx if isinstance(ctx, dict) else {},
            })
        except Exception:
            self.handleError(record)

    def query(self, *, level: str | None, service: str | None, start: datetime | None, end: datetime | None,
              page: int, size: int) -> tuple[list[dict[str, Any]], int]:
        minimum = LEVELS.get(level or "debug", logging.DEBUG)
        matched = [r for r in reversed(self.records)
                   if r["levelno"] >= minimum and (not service or r["service"] == service)
                   and (start is None or r["timestamp"] >= start) and (end is None or r["timestamp"] <= end)]
        chosen = matched[(page - 1) * size: page * size]
        return [{k: v for k, v in r.items() if k != "levelno"} for r in chosen], len(matched)


def _service_of(logger_name: str) -> str:
    parts = logger_name.split(".")
    if parts[0] == "taskyard" and len(parts) > 1:
        return parts[1]
    return parts[0]


class RequestMeter:
    """Request rate and mean response time over a sliding minute."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=100_000)

    def observe(self, seconds: float) -> None:
        self.samples.append((time.monotonic(), seconds))

    def summary(self) -> dict[str, float]:
        cutoff = time.monotonic() - self.WINDOW
        while self.samples and self.samples[0][0] < cutoff:
            self.samples.popleft()
        count = len(self.samples)
        mean = sum(s for _, s in self.samples) / count if count else 0.0
        return {"request_rate": round(count / self.WINDOW, 3), "response_time": round(mean, 6)}


class Metrics:
    """prometheus_client metrics of one server process; gauges are refreshed from the database per scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks_total = Gauge("scheduler_tasks_total", "Total number of tasks", registry=r)
        self.tasks_active = Gauge("scheduler_tasks_active", "Number of active tasks", registry=r)
        self.tasks_paused = Gauge("scheduler_tasks_paused", "Number of paused tasks", registry=r)
        self.workers_total = Gauge("scheduler_workers_total", "Total number of workers", registry=r)
        self.workers = Gauge("scheduler_workers", "Workers by status", ["status"], registry=r)
        self.runs = Gauge("scheduler_task_runs", "Runs by canonical status", ["status"], registry=r)
        self.queue_depth = Gauge("scheduler_queue_depth", "Runs claimable right now", registry=r)
        self.leader = Gauge("scheduler_leader", "1 if this server leads the scheduler", registry=r)
        self.duration = Histogram("scheduler_task_execution_duration_seconds", "Task execution duration",
                                  buckets=(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0),
                                  registry=r)
        self.finished = Counter("scheduler_task_runs_finished", "Runs finished by this server",
                                ["status"], registry=r)
        self.cron_fired = Gauge("scheduler_cron_fired", "Cron slots fired by this server", registry=r)
        self.requests = Counter("scheduler_http_requests", "HTTP requests", ["method", "status"], registry=r)
        self.request_seconds = Histogram("scheduler_http_request_duration_seconds", "HTTP request duration",
                                         registry=r)

    def observe_run(self, run: Run) -> None:
        self.finished.labels(run.status.value).inc()
        if run.execution_time is not None:
            self.duration.observe(run.execution_time)

    def render(self, gauges: dict[str, Any], *, leader: bool, fired: int) -> bytes:
        tasks, runs, workers = gauges["tasks"], gauges["runs"], gauges["workers"]
        self.tasks_total.set(tasks["total"])
        self.tasks_active.set(tasks["active"])
        self.tasks_paused.set(tasks["paused"])
        self.workers_total.set(workers["total"])
        for status in ("active", "draining", "offline"):
            self.workers.labels(status).set(workers[status])
        for status in ("pending", "queued", "running", "completed", "failed", "aborted"):
            self.runs.labels(status).set(runs.get(status, 0))
        self.queue_depth.set(gauges["queue_depth"])
        self.leader.set(1 if leader else 0)
        self.cron_fired.set(fired)
        return generate_latest(self.registry)


class TimingMiddleware:
    def __init__(self, app: ASGIApp, meter: RequestMeter, metrics: Metrics) -> None:
        self.app = app
        self.meter = meter
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            self.meter.observe(elapsed)
            self.metrics.requests.labels(scope["method"], str(status)).inc()
            self.metrics.request_seconds.observe(elapsed)
