"""How runs are born, released, retried and finished. Every status change of a run goes through here
(and through `check_transition`), inside the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run, Task
from taskyard.domain.retry import RetryPolicy
from taskyard.domain.status import (
    ACTIVE_RUN_STATUSES,
    Priority,
    RunStatus,
    TriggerKind,
    check_transition,
    sources_of,
)
from taskyard.storage import cron as cron_rows
from taskyard.storage import outcomes as outcome_rows
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage.outcomes import Outcome


@dataclass(frozen=True)
class FinishedRun:
    """A run that reached a final status in this transaction; observers (metrics, webhooks) see it."""

    run: Run


class LastRunMarks:
    """When this process last moved each task's `last_run_at`. The column has a resolution of
    `LAST_RUN_RESOLUTION`, so a burst of runs of one task writes it once a second per server, without
    even sending the (guarded, mostly no-op) UPDATE the rest of the time."""

    LIMIT = 10_000  # tasks remembered; past that the memory starts over (the UPDATE's guard still holds)

    def __init__(self) -> None:
        self._marks: dict[int, datetime] = {}

    def due(self, task_id: int, now: datetime) -> bool:
        """True (and now marked) if `last_run_at` should be written for a run born at `now`."""
        mark = self._marks.get(task_id)
        if mark is not None and timedelta(0) <= now - mark < task_rows.LAST_RUN_RESOLUTION:
            return False
        if len(self._marks) >= self.LIMIT:
            self._marks.clear()
        self._marks[task_id] = now
        return True

    def forget(self, task_id: int) -> None:
        """The write that `due` allowed did not happen: the next run may make it."""
        self._marks.pop(task_id, None)


class RunLifecycle:
    """Made fresh for each transaction: `finished` lists what that transaction finished."""

    def __init__(self, retry_base_delay: float = 1.0, retry_max_delay: float = 300.0,
                 last_run_marks: LastRunMarks | None = None) -> None:
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.last_run_marks = last_run_marks or LastRunMarks()
        self.finished: list[FinishedRun] = []
        # Runs a caller has shown to have no run_waits rows, so finishing them needs no wait bookkeeping.
        self.known_unwaited: set[int] = set()
        self._last_outcome: dict[int, tuple[RunStatus, datetime]] = {}

    async def create(self, conn: AsyncConnection, task: Task, *, now: datetime, trigger: TriggerKind,
                     parameters: dict[str, Any] | None = None, priority: Priority | None = None,
                     timeout_seconds: int | None = None, scheduled_for: datetime | None = None,
                     restarted_from: int | None = None, idempotency_key: str | None = None,
                     reason: str | None = None, wake: bool = True) -> Run | None:
        """Insert a run. It waits (pending) on every dependency that has not succeeded since this task's
        last success: an in-flight run of the dependency is shared, otherwise one is triggered for it.
        A queued run wakes the pollers, unless the caller hands it over itself (`wake=False`)."""
        # A cron slot may turn out to be taken (another tick fired it): then the dependency runs
        # triggered for it are undone with the savepoint instead of being left with nothing waiting.
        slot = await conn.begin_nested() if scheduled_for is not None else None
        waits = await self._plan_dependencies(conn, task, now=now)
        status = RunStatus.PENDING if waits else RunStatus.QUEUED
        values = new_run_values(task, status, now=now, trigger=trigger, parameters=parameters, priority=priority,
                                timeout_seconds=timeout_seconds, scheduled_for=scheduled_for,
                                restarted_from=restarted_from, idempotency_key=idempotency_key)
        run = await run_rows.insert_run(conn, values, reason=reason, on_conflict_skip=scheduled_for is not None,
                                        wake=status is RunStatus.QUEUED and wake)
        if run is None:
            if slot is not None:
                await slot.rollback()
            return None
        if slot is not None:
            await slot.commit()
        await run_rows.add_waits(conn, run.id, waits)
        if self.last_run_marks.due(task.id, now):
            await task_rows.touch_last_run(conn, task.id, now)
        return run

    async def create_cron_runs(self, conn: AsyncConnection, fires: list[tuple[int, datetime]], *,
                               now: datetime) -> list[tuple[int, int, datetime]]:
        """Queue one run per (task id, slot) of tasks without dependencies, set-wise (those with
        dependencies go through `create`); a slot already taken is skipped. Returns (run id, task id, slot)
        of the runs created. Pollers are woken only for runs claimable now: those created ahead of their
        slot are woken for when it comes (SchedulingService)."""
        created = await cron_rows.insert_slot_runs(conn, fires, now)
        if any(slot <= now for _, _, slot in created):
            await run_rows.notify(conn)
        return created

    async def _plan_dependencies(self, conn: AsyncConnection, task: Task, *, now: datetime) -> list[int]:
        waits: list[int] = []
        for dep_id in task.dependencies:
            dep = await task_rows.get_task(conn, dep_id)
            if dep is None:
                continue  # deleting a task removes the edges; a race here just drops the wait
            fresh = dep.last_success_at is not None and (
                task.last_success_at is None or dep.last_success_at > task.last_success_at)
            if fresh:
                continue
            inflight = await run_rows.latest_active_run(conn, dep.id)
            if inflight is not None:
                waits.append(inflight.id)
                continue
            dep_run = await self.create(conn, dep, now=now, trigger=TriggerKind.DEPENDENCY,
                                        reason=f"triggered as a dependency of '{task.name}'")
            if dep_run is not None:
                waits.append(dep_run.id)
        return waits

    async def move(self, conn: AsyncConnection, run: Run, target: RunStatus, *, now: datetime,
                   values: dict[str, Any] | None = None, reason: str | None = None,
                   attempt: int | None = None, worker_id: str | None = None) -> Run | None:
        """Guarded status change; None if the run moved under us (the caller lost a race)."""
        check_transition(run.status, target)
        changes = dict(values or {})
        changes["status"] = target
        if target.is_final:
            changes.setdefault("completed_at", now)
            changes["lease_expires_at"] = None
            if run.status is RunStatus.RUNNING and run.started_at is not None:
                changes.setdefault("execution_time", round((now - run.started_at).total_seconds(), 6))
        # Guard on the attempt that was read too: running -> queued -> running again (same status,
        # newer attempt) must not let a decision about the old attempt land on the new one.
        moved = await run_rows.change_status(conn, run.id, expected={run.status}, values=changes, at=now,
                                             reason=reason, attempt=run.attempt if attempt is None else attempt,
                                             worker_id=worker_id)
        if moved is not None and target.is_final:
            await self._after_final(conn, moved, now=now)
        return moved

    async def finish_plainly(self, conn: AsyncConnection, outcomes: list[Outcome], *, worker_id: str,
                             project_id: int, now: datetime) -> list[Run] | None:
        """Final statuses reported by the attempts that hold their runs, set-wise, when every one of them is
        plain (storage/outcomes.py); the runs moved (one missing moved under the report). None, with
        nothing done, when the report has to be applied run by run."""
        moved = await outcome_rows.finish_if_all_plain(conn, outcomes, worker_id=worker_id, project_id=project_id,
                                                       now=now)
        if moved is None:
            return None
        for run in sorted(moved, key=lambda r: (r.task_id, r.id)):  # tasks locked in order, as `report` does
            self.finished.append(FinishedRun(run))
            await self._record_outcome(conn, run, now)
        return moved

    async def _record_outcome(self, conn: AsyncConnection, run: Run, now: datetime) -> None:
        # A batch of runs of one task that end alike writes the task's row once (the last write wins,
        # so only a repeat of the very same outcome is skipped).
        if self._last_outcome.get(run.task_id) != (run.status, now):
            self._last_outcome[run.task_id] = (run.status, now)
            await task_rows.record_outcome(conn, run.task_id, run.status, now)

    async def _after_final(self, conn: AsyncConnection, run: Run, *, now: datetime) -> None:
        self.finished.append(FinishedRun(run))
        await self._record_outcome(conn, run, now)
        if run.id in self.known_unwaited:
            return  # the caller checked for the whole batch: nothing waits on it, it waits on nothing
        await run_rows.clear_waits(conn, run.id)
        if run.status is RunStatus.COMPLETED:
            released = await run_rows.release_wait(conn, run.id)
            for waiting in await run_rows.get_runs(conn, released):
                if waiting.status is RunStatus.PENDING:
                    await self.move(conn, waiting, RunStatus.QUEUED, now=now,
                                    values={"queued_at": now, "available_at": now},
                                    reason=f"dependency '{run.task_name}' succeeded (run {run.id})")
            if released:
                await run_rows.notify(conn)
            return
        waiting_ids = await run_rows.waiters_of(conn, run.id)
        cause = run.error_message or run.status.value
        for waiting in await run_rows.get_runs(conn, waiting_ids):
            if waiting.status in ACTIVE_RUN_STATUSES:
                message = f"dependency '{run.task_name}' {run.status.value} (run {run.id}): {cause}"
                await self.move(conn, waiting, RunStatus.FAILED, now=now, reason=message,
                                values={"error_message": message})

    async def fail_attempt(self, conn: AsyncConnection, run: Run, *, now: datetime, error: str,
                           values: dict[str, Any] | None = None, immediate: bool = False) -> Run | None:
        """An attempt failed: queue a new attempt after backoff while retries remain, else fail."""
        policy = RetryPolicy(max_retries=run.max_retries, base_delay=self.retry_base_delay,
                             max_delay=self.retry_max_delay)
        extra = dict(values or {})
        if policy.should_retry(run.retry_count):
            at = now if immediate else policy.next_attempt_at(now, run.retry_count)
            wait = (at - now).total_seconds()
            extra.update(retry_count=run.retry_count + 1, available_at=at, queued_at=now,
                         error_message=error, worker_id=None, lease_expires_at=None)
            moved = await self.move(conn, run, RunStatus.QUEUED, now=now, values=extra,
                                    reason=f"attempt {run.attempt} failed: {error}; retry "
                                           f"{run.retry_count + 1}/{run.max_retries} in {wait:.1f}s")
            if moved is not None and immediate:
                await run_rows.notify(conn)
            return moved
        extra["error_message"] = error
        return await self.move(conn, run, RunStatus.FAILED, now=now, values=extra, reason=error)

    async def abort(self, conn: AsyncConnection, run: Run, *, now: datetime, reason: str) -> Run | None:
        if run.status not in sources_of(RunStatus.ABORTED):
            return None
        moved = await self.move(conn, run, RunStatus.ABORTED, now=now, reason=reason,
                                values={"error_message": reason})
        if moved is not None and run.status is RunStatus.RUNNING:
            await run_rows.notify(conn)  # its worker is long-polling: tell it to kill the process now
        return moved


def new_run_values(task: Task, status: RunStatus, *, now: datetime, trigger: TriggerKind,
                   parameters: dict[str, Any] | None = None, priority: Priority | None = None,
                   timeout_seconds: int | None = None, scheduled_for: datetime | None = None,
                   restarted_from: int | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
    """The columns of a newborn run of `task`."""
    chosen = priority or task.priority
    return {
        "uuid": str(uuid.uuid4()), "project_id": task.project_id, "task_id": task.id, "task_name": task.name,
        "task_type": task.task_type, "status": status, "priority": chosen,
        "priority_rank": chosen.rank, "parameters": parameters or {},
        "timeout_seconds": timeout_seconds or task.timeout_seconds,
        "max_retries": task.retry_count, "retry_count": 0, "attempt": 0, "trigger": trigger,
        "available_at": now, "scheduled_for": scheduled_for, "restarted_from": restarted_from,
        "idempotency_key": idempotency_key, "created_at": now, "updated_at": now,
        "queued_at": now if status is RunStatus.QUEUED else None,
    }


def lease_deadline(now: datetime, lease_seconds: float) -> datetime:
    return now + timedelta(seconds=lease_seconds)
