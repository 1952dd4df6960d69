"""The service container: one database, one clock, the use cases, and who hears about finished runs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from taskyard.domain.models import Run
from taskyard.services.clock import Clock, system_clock
from taskyard.services.dispatch import Dispatcher
from taskyard.services.lifecycle import LastRunMarks, RunLifecycle
from taskyard.storage.database import Database

BUILTIN_TASK_TYPES = frozenset({"shell", "python", "http"})


@dataclass(frozen=True)
class CoreConfig:
    lease_seconds: float = 15.0
    poll_wait_max: float = 30.0
    retry_base_delay: float = 1.0
    retry_max_delay: float = 300.0
    page_size_max: int = 500
    retention_days: float = 30.0  # tracking events, log lines and samples older than this are purged; 0 keeps all
    task_types: frozenset[str] = field(default_factory=lambda: BUILTIN_TASK_TYPES)


class Core:
    def __init__(self, db: Database, config: CoreConfig | None = None, clock: Clock = system_clock) -> None:
        from taskyard.services.access import AccessService
        from taskyard.services.job_tracking import JobTrackingService
        from taskyard.services.runs import RunService
        from taskyard.services.scheduling import SchedulingService
        from taskyard.services.system import SystemService
        from taskyard.services.tasks import TaskService
        from taskyard.services.tenancy import TenancyService
        from taskyard.services.tracking import TrackingService
        from taskyard.services.workers import WorkerService

        self.db = db
        self.config = config or CoreConfig()
        self.clock = clock
        self.run_observers: list[Callable[[Run], None]] = []
        self.last_run_marks = LastRunMarks()
        self.dispatch = Dispatcher()
        from taskyard.services.retention import RetentionService
        from taskyard.services.tallies import TallyService

        self.retention = RetentionService(self)
        self.tallies = TallyService(self)
        self.tasks = TaskService(self)
        self.runs = RunService(self)
        self.workers = WorkerService(self)
        self.scheduling = SchedulingService(self)
        self.system = SystemService(self)
        self.access = AccessService(self)
        self.tracking = TrackingService(self)
        self.tenancy = TenancyService(self)
        self.jobs = JobTrackingService(self)

    def lifecycle(self) -> RunLifecycle:
        return RunLifecycle(self.config.retry_base_delay, self.config.retry_max_delay, self.last_run_marks)

    def publish(self, lifecycle: RunLifecycle) -> None:
        """Tell observers about runs a committed transaction finished; an observer never breaks a write."""
        for finished in lifecycle.finished:
            for observer in self.run_observers:
                # Observers report (metrics, webhooks); they must never fail the write that finished the run.
                with contextlib.suppress(Exception):
                    observer(finished.run)
        lifecycle.finished.clear()

    def wake(self) -> None:
        """Wake this server's pollers now (a wake-up requested in a transaction fires at its commit)."""
        self.db.wakeup.fire()
