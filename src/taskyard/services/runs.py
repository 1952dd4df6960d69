"""Use cases on runs: trigger, restart, abort, read."""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from taskyard.domain.errors import Conflict, NotFound, ValidationFailed
from taskyard.domain.models import Run, Task
from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind
from taskyard.services.dispatch import WaitingPoll
from taskyard.services.lifecycle import lease_deadline
from taskyard.services.scope import UNSCOPED, Scope
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage import triggers as trigger_rows
from taskyard.storage.paging import PageRequest

if TYPE_CHECKING:
    from taskyard.services.core import Core

DETAIL_LOG_LINES = 1000


@dataclass(frozen=True)
class Triggered:
    run: Run
    average_execution_time: float | None  # of this task's completed runs, for an estimate


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    total: int
    exact: bool  # False: at least `total` runs match (a filter by worker or dates stops counting)


@dataclass(frozen=True)
class RunDetail:
    run: Run
    logs: list[dict[str, Any]]
    logs_total: int
    history: list[dict[str, Any]]
    waiting_on: list[int]


class RecentAverages:
    """Each task's recent average execution time, as the trigger answer's estimate uses it, remembered for
    a few seconds: a burst of triggers of one task reads it once instead of once per run. A run of the task
    completing through this server moves the remembered average itself (exactly while fewer than `SAMPLE`
    runs are behind it, as a moving average after that), so the estimate follows the newest outcome here
    without a read per trigger; another server's outcomes show within `TTL`."""

    TTL = 5.0
    LIMIT = 10_000
    SAMPLE = 50  # the newest completed runs the stored average is taken over

    def __init__(self) -> None:
        # task id -> (average, completed runs behind it, remembered until)
        self._known: dict[int, tuple[float | None, int, float]] = {}

    def get(self, task_id: int) -> tuple[bool, float | None]:
        known = self._known.get(task_id)
        if known is None or known[2] < time.monotonic():
            return False, None
        return True, known[0]

    def put(self, task_id: int, average: float | None, runs: int) -> None:
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[task_id] = (average, runs, time.monotonic() + self.TTL)

    def observe(self, run: Run) -> None:
        known = self._known.get(run.task_id)
        if known is None or run.status is not RunStatus.COMPLETED or run.execution_time is None:
            return
        average, runs, until = known
        seconds = run.execution_time
        if average is None or runs == 0:
            average, runs = seconds, 1
        elif runs < self.SAMPLE:
            average, runs = (average * runs + seconds) / (runs + 1), runs + 1
        else:
            average += (seconds - average) / self.SAMPLE
        self._known[run.task_id] = (round(average, 3), runs, until)


class TaskKinds:
    """Each triggered task's project and type, as this server last saw them: what choosing a waiting poll
    needs before the trigger's one statement reads the task. A stale entry costs nothing but the hand-over
    (the statement checks the poll against the task it reads)."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._kinds: dict[int, tuple[int, str]] = {}

    def get(self, task_id: int) -> tuple[int, str] | None:
        return self._kinds.get(task_id)

    def remember(self, task_id: int, kind: tuple[int, str]) -> None:
        if len(self._kinds) >= self.LIMIT:
            self._kinds.clear()
        self._kinds[task_id] = kind


class RunService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._kinds = TaskKinds()
        self.averages = RecentAverages()
        core.run_observers.append(self.averages.observe)

    async def trigger(self, task_id: int, *, parameters: dict[str, Any] | None = None,
                      priority: str | None = None, timeout_seconds: int | None = None,
                      scope: Scope = UNSCOPED) -> Triggered:
        if priority is not None and priority not in {p.value for p in Priority}:
            raise ValidationFailed("priority must be one of low, normal, high, critical", field="priority",
                                   rule="one_of", value=priority)
        if timeout_seconds is not None and not (1 <= timeout_seconds <= 7 * 24 * 3600):
            raise ValidationFailed("timeout_seconds must be between 1 and 604800", field="timeout_seconds",
                                   rule="range", value=timeout_seconds)
        now = self.core.clock()
        chosen = Priority(priority) if priority else None
        run = None
        if self.core.db.is_postgres:
            run = await self._trigger_in_one_statement(task_id, parameters, chosen, timeout_seconds, scope, now)
        if run is None:
            run = await self._trigger_in_a_transaction(task_id, parameters, chosen, timeout_seconds, scope, now)
        # Read after the commit: the run is claimable a round trip sooner, and the estimate needs no lock.
        known, average = self.averages.get(task_id)
        if not known:
            async with self.core.db.read() as conn:
                average, behind = await task_rows.recent_average_execution_time(
                    conn, task_id, sample=RecentAverages.SAMPLE)
            self.averages.put(task_id, average, behind)
        return Triggered(run, average)

    async def _trigger_in_one_statement(self, task_id: int, parameters: dict[str, Any] | None,
                                        priority: Priority | None, timeout_seconds: int | None, scope: Scope,
                                        now: datetime) -> Run | None:
        """PostgreSQL: the usual trigger as one statement (storage/triggers.py); None when it did not apply
        and the transaction has to decide (and explain)."""
        kind = self._kinds.get(task_id)
        if kind is None and len(self.core.dispatch):
            return None  # a poll is waiting, and which one may take the run needs the task read first
        # A worker waiting on this server takes the run in the same statement (dispatch.py); which poll may
        # take it is known from the task's project and type, remembered from its earlier triggers.
        poll = self.core.dispatch.take(*kind) if kind is not None else None
        touch = self.core.last_run_marks.due(task_id, now)
        made: tuple[Run, Task] | None = None
        try:
            async with self.core.db.statement() as conn:
                made = await trigger_rows.trigger(
                    conn, task_id, project_id=scope.project_id, task_types=sorted(self.core.config.task_types),
                    now=now, parameters=parameters, priority=priority, timeout_seconds=timeout_seconds,
                    hand_to=None if poll is None else trigger_rows.HandTo(
                        poll.worker_id, poll.hostname, poll.project_id, sorted(poll.task_types),
                        lease_deadline(now, self.core.config.lease_seconds)),
                    touch=touch, origin=self.core.db.wakeup.origin)
        finally:
            if poll is not None:
                # A reserved poll always hears back: with the run, or with nothing so that it claims again.
                handed = made is not None and made[0].status is RunStatus.RUNNING
                poll.deliver(made if handed else None)
        if made is None:
            if touch:
                self.core.last_run_marks.forget(task_id)
            return None
        run, task = made
        self._kinds.remember(task_id, (task.project_id, task.task_type))
        if run.status is RunStatus.QUEUED:
            self.core.db.wakeup.fire()  # this server's pollers; the statement notified the others
        return run

    async def _trigger_in_a_transaction(self, task_id: int, parameters: dict[str, Any] | None,
                                        priority: Priority | None, timeout_seconds: int | None, scope: Scope,
                                        now: datetime) -> Run:
        lifecycle = self.core.lifecycle()
        poll: WaitingPoll | None = None
        task: Task | None = None
        handed: Run | None = None
        committed = False
        try:
            async with self.core.db.write() as conn:
                task = await task_rows.get_task(conn, task_id, project_id=scope.project_id)
                if task is None:
                    raise NotFound(f"task {task_id} does not exist", resource="task", id=task_id)
                if task.status is TaskStatus.PAUSED:
                    raise Conflict(f"task '{task.name}' is paused; resume it before triggering",
                                   field="status", value=task.status.value)
                if task.task_type not in self.core.config.task_types:
                    raise Conflict(f"task '{task.name}' is reported by code outside taskyard "
                                   f"(type '{task.task_type}'); no worker can run it", field="task_type",
                                   value=task.task_type)
                # A worker waiting on this server takes the run in this very transaction (dispatch.py).
                if not task.dependencies:
                    poll = self.core.dispatch.take(task.project_id, task.task_type)
                run = await lifecycle.create(conn, task, now=now, trigger=TriggerKind.MANUAL,
                                             parameters=parameters,
                                             priority=priority,
                                             timeout_seconds=timeout_seconds, reason="triggered",
                                             wake=poll is None)
                assert run is not None
                if poll is not None:
                    if run.status is RunStatus.QUEUED:
                        handed = await self.core.workers.hand_over(conn, run, poll, now)
                    if handed is None:
                        await run_rows.notify(conn)
                    else:
                        run = handed
            committed = True
        finally:
            if poll is not None:
                # A reserved poll always hears back: with the run, or with nothing so that it claims again.
                poll.deliver((handed, task) if committed and handed is not None and task is not None else None)
        self.core.publish(lifecycle)
        if task is not None:
            self._kinds.remember(task_id, (task.project_id, task.task_type))
        return run

    async def restart(self, run_id: int, *, scope: Scope = UNSCOPED) -> Run:
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            original = await self._get(conn, run_id, scope)
            task = await task_rows.get_task(conn, original.task_id, project_id=original.project_id)
            if task is None:
                raise Conflict(f"the task of run {run_id} was deleted; it cannot be restarted",
                               field="task_id", value=original.task_id)
            run = await lifecycle.create(conn, task, now=now, trigger=TriggerKind.RESTART,
                                         parameters=original.parameters, priority=original.priority,
                                         timeout_seconds=original.timeout_seconds,
                                         restarted_from=original.id, reason=f"restart of run {original.id}")
        assert run is not None
        self.core.publish(lifecycle)
        return run

    async def abort(self, run_id: int, *, scope: Scope = UNSCOPED) -> Run:
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            run = await self._get(conn, run_id, scope)
            if run.status.is_final:
                raise Conflict(f"run {run_id} already {run.status.value}", field="status",
                               value=run.status.value)
            aborted = await lifecycle.abort(conn, run, now=now, reason="aborted by request")
            if aborted is None:
                raise Conflict(f"run {run_id} changed status; try again", field="status")
        self.core.publish(lifecycle)
        return aborted

    async def get(self, run_id: int, *, log_lines: int = DETAIL_LOG_LINES, scope: Scope = UNSCOPED) -> RunDetail:
        async with self.core.db.read() as conn:
            run = await self._get(conn, run_id, scope)
            logs = await run_rows.logs(conn, run_id, limit=log_lines, tail=True)
            total = await run_rows.log_count(conn, run_id) if len(logs) >= log_lines else len(logs)
            history = await run_rows.history(conn, run_id)
            waiting = await run_rows.waits_of(conn, run_id) if run.status is RunStatus.PENDING else []
        return RunDetail(run, logs, total, history, waiting)

    async def logs(self, run_id: int, *, after_id: int = 0, limit: int = 1000,
                   scope: Scope = UNSCOPED) -> tuple[Run, list[dict[str, Any]]]:
        async with self.core.db.read() as conn:
            run = await self._get(conn, run_id, scope)
            lines = await run_rows.logs(conn, run_id, after_id=after_id, limit=limit)
        return run, lines

    async def list(self, *, task_id: int | None = None, status: list[str] | None = None, worker_id: str | None = None,
                   start_date: date | None = None, end_date: date | None = None,
                   page: PageRequest, scope: Scope = UNSCOPED) -> tuple[list[Run], int]:
        found = await self.list_page(task_id=task_id, status=status, worker_id=worker_id, start_date=start_date,
                                     end_date=end_date, page=page, scope=scope)
        return found.runs, found.total

    async def list_page(self, *, task_id: int | None = None, status: builtins.list[str] | None = None,
                        worker_id: str | None = None, start_date: date | None = None, end_date: date | None = None,
                        page: PageRequest, scope: Scope = UNSCOPED) -> RunPage:
        if page.sort not in run_rows.SORTABLE:
            raise ValidationFailed(f"cannot sort runs by '{page.sort}'", field="sort", rule="one_of",
                                   value=page.sort)
        async with self.core.db.read() as conn:
            runs, total, exact = await run_rows.list_runs(
                conn, project_id=scope.project_id, task_id=task_id, status=status, worker_id=worker_id,
                start_date=start_date, end_date=end_date, page=page)
        return RunPage(runs, total, exact)

    async def _get(self, conn: Any, run_id: int, scope: Scope) -> Run:
        # A run of another project is "not found", in the same words as one that never existed.
        run = await run_rows.get_run(conn, run_id, project_id=scope.project_id)
        if run is None:
            raise NotFound(f"run {run_id} does not exist", resource="run", id=run_id)
        return run
