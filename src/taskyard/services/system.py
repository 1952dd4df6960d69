"""Health and statistics computed from the database and this process."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from taskyard.domain.errors import Unavailable
from taskyard.domain.status import RunStatus
from taskyard.services.scope import UNSCOPED, Scope
from taskyard.services.workers import format_duration
from taskyard.storage import runs as run_rows
from taskyard.storage import tallies as tally_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage import workers as worker_rows

if TYPE_CHECKING:
    from taskyard.services.core import Core

THROUGHPUT_WINDOW = timedelta(minutes=5)


class SystemService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.started_monotonic = time.monotonic()
        self.data_dir: Path = Path.cwd()
        self._process = psutil.Process(os.getpid())

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic

    async def health(self, *, scope: Scope = UNSCOPED) -> dict[str, Any]:
        """Counts (queue size, workers, pending runs) are of the scope's project; every project when unscoped."""
        components: dict[str, Any] = {}
        try:
            db_time = await asyncio.wait_for(self.core.db.ping(), 5.0)
            components["database"] = {"status": "healthy", "response_time": round(db_time, 6),
                                      "connection_pool": self.core.db.pool_status()}
        except (Unavailable, TimeoutError, OSError) as exc:
            components["database"] = {"status": "unhealthy", "error": str(exc) or "timed out",
                                      "connection_pool": self.core.db.pool_status()}
            components["message_queue"] = {"status": "unhealthy", "error": "the run queue lives in the database"}
            components["scheduler"] = {"status": "unknown", "leader": self.core.scheduling.is_leader}
            return components
        started = time.perf_counter()
        now = self.core.clock()
        async with self.core.db.read() as conn:
            depth = await run_rows.queue_depth(conn, now, project_id=scope.project_id)
            queue_time = time.perf_counter() - started
            waiting = await tally_rows.figures(conn, project_id=scope.project_id,
                                               statuses=[RunStatus.PENDING, RunStatus.QUEUED])
            worker_counts = await worker_rows.counts(conn, project_id=scope.project_id)
        components["message_queue"] = {"status": "healthy", "response_time": round(queue_time, 6),
                                       "queue_size": depth}
        scheduling = self.core.scheduling
        stale = (scheduling.is_leader and scheduling.last_tick_at is not None
                 and (now - scheduling.last_tick_at).total_seconds() > 30)
        components["scheduler"] = {
            "status": "unhealthy" if stale else "healthy",
            "role": "leader" if scheduling.is_leader else "standby",
            "last_tick_at": scheduling.last_tick_at,
            "active_workers": worker_counts["active"],
            "pending_tasks": sum(f.runs for f in waiting.values()),
        }
        return components

    async def stats(self, *, scope: Scope = UNSCOPED) -> dict[str, Any]:
        now = self.core.clock()
        project_id = scope.project_id
        async with self.core.db.read() as conn:
            tasks = await task_rows.counts(conn, project_id=project_id)
            found = await tally_rows.figures(conn, project_id=project_id)
            workers = await worker_rows.counts(conn, project_id=project_id)
            recent = await run_rows.finished_since(conn, now - THROUGHPUT_WINDOW, project_id=project_id)
        counts = {status: f.runs for status, f in found.items()}
        average = found.get(RunStatus.COMPLETED, tally_rows.Figures()).average_seconds
        finished_total = sum(counts.get(s, 0) for s in ("completed", "failed", "aborted"))
        return {
            "tasks": tasks,
            "task_runs": {
                "total": sum(counts.values()),
                "pending": counts.get("pending", 0) + counts.get("queued", 0),
                "running": counts.get("running", 0),
                "completed": counts.get("completed", 0),
                "failed": counts.get("failed", 0),
                "aborted": counts.get("aborted", 0),
            },
            "workers": workers,
            "performance": {
                "average_execution_time": average,
                "tasks_per_minute": round(recent["finished"] / (THROUGHPUT_WINDOW.total_seconds() / 60), 2),
                "success_rate": round(100.0 * counts.get("completed", 0) / finished_total, 2)
                if finished_total else None,
                "system_uptime": format_duration(self.uptime_seconds),
            },
            "resource_usage": self.resource_usage(),
        }

    def resource_usage(self) -> dict[str, Any]:
        net = psutil.net_io_counters()
        try:
            disk = psutil.disk_usage(str(self.data_dir)).percent
        except OSError:
            disk = None
        return {
            "cpu_usage": psutil.cpu_percent(interval=None),
            "memory_usage": int(self._process.memory_info().rss / (1024 * 1024)),
            "disk_usage": disk,
            "network_io": {"bytes_in": net.bytes_recv, "bytes_out": net.bytes_sent},
        }

    async def gauges(self, *, scope: Scope = UNSCOPED) -> dict[str, Any]:
        """The figures /system/metrics exports, read in one snapshot."""
        now = self.core.clock()
        project_id = scope.project_id
        async with self.core.db.read() as conn:
            found = await tally_rows.figures(conn, project_id=project_id)
            return {"tasks": await task_rows.counts(conn, project_id=project_id),
                    "runs": {status: f.runs for status, f in found.items()},
                    "workers": await worker_rows.counts(conn, project_id=project_id),
                    "queue_depth": await run_rows.queue_depth(conn, now, project_id=project_id)}
