"""Use cases of the worker protocol: register, heartbeat, long-poll for runs, report results."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from taskyard.domain.errors import Conflict, NotFound, StaleAttempt, ValidationFailed
from taskyard.domain.models import Command, Run, Task, Worker
from taskyard.domain.status import RunStatus, WorkerStatus
from taskyard.services.dispatch import WaitingPoll
from taskyard.services.lifecycle import RunLifecycle, lease_deadline
from taskyard.services.scope import UNSCOPED, Scope
from taskyard.storage import runs as run_rows
from taskyard.storage import workers as worker_rows
from taskyard.storage.outcomes import Outcome
from taskyard.storage.paging import PageRequest

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from taskyard.services.core import Core

OUTCOMES = {"completed", "failed", "timed_out", "aborted"}
# The status a final outcome leaves its run in when no retry follows.
_FINAL_OF = {"completed": RunStatus.COMPLETED, "failed": RunStatus.FAILED, "timed_out": RunStatus.FAILED,
             "aborted": RunStatus.ABORTED}


@dataclass
class Registration:
    hostname: str
    ip_address: str
    port: int
    task_types: list[str]
    max_concurrent_tasks: int = 5
    metadata: dict[str, Any] = field(default_factory=dict)
    worker_id: str | None = None


@dataclass
class Heartbeat:
    current_task_count: int | None = None
    load_average: float | None = None
    memory_usage: int | None = None
    cpu_usage: float | None = None
    current_tasks: list[int] = field(default_factory=list)
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class HeartbeatAck:
    worker: Worker
    abort_runs: list[int]


@dataclass(frozen=True)
class ReportResult:
    accepted: list[int]
    rejected: list[dict[str, Any]]


@dataclass(frozen=True)
class PollResult:
    runs: list[Run]
    abort_runs: list[int]
    status: WorkerStatus
    lease_seconds: float
    commands: dict[int, Command] = field(default_factory=dict)  # by task id
    # What became of the outcomes the poll carried (None when it carried none).
    report: ReportResult | None = None


@dataclass
class RunReport:
    run_id: int
    attempt: int
    outcome: str | None = None
    result: str | None = None
    error_message: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class WorkerDetail:
    worker: Worker
    current_runs: list[Run]
    statistics: dict[str, Any]


# How stale a worker's `last_heartbeat` may get between its polls (its lease is many times longer).
SEEN_RESOLUTION = timedelta(seconds=1)


class WorkerService:
    def __init__(self, core: Core) -> None:
        self.core = core

    @property
    def lease(self) -> float:
        return self.core.config.lease_seconds

    async def register(self, reg: Registration, *, scope: Scope = UNSCOPED) -> Worker:
        """A new worker belongs to the scope's home project and only ever claims that project's runs."""
        unknown = sorted(set(reg.task_types) - self.core.config.task_types)
        if unknown or not reg.task_types:
            raise ValidationFailed(f"unknown task types: {', '.join(unknown) or '(none given)'}",
                                   field="task_types", rule="one_of", value=reg.task_types)
        now = self.core.clock()
        worker_id = reg.worker_id or f"{reg.hostname}-{secrets.token_hex(3)}"
        lifecycle = self.core.lifecycle()
        values = {"hostname": reg.hostname, "ip_address": reg.ip_address, "port": reg.port,
                  "task_types": reg.task_types, "max_concurrent_tasks": reg.max_concurrent_tasks,
                  "current_task_count": 0, "status": WorkerStatus.ACTIVE, "last_heartbeat": now,
                  "registered_at": now, "metadata": reg.metadata, "deleted": False}
        async with self.core.db.write() as conn:
            owner = await worker_rows.project_of(conn, worker_id)
            if owner is not None and scope.project_id is not None and owner != scope.project_id:
                # Worker ids are unique across projects: another project's id is taken, and nothing more is said.
                raise Conflict(f"worker id '{worker_id}' is taken; choose another", field="id", value=worker_id)
            if owner is not None:
                # The same worker starting again: whatever its previous life held is lost.
                await self._requeue_held(conn, lifecycle, worker_id, now, "worker re-registered")
                worker = await worker_rows.update_worker(conn, worker_id, values)
            else:
                await worker_rows.insert_worker(conn, {"id": worker_id, "project_id": scope.home, "created_at": now,
                                                       **values})
                worker = await worker_rows.get_worker(conn, worker_id)
        assert worker is not None
        self.core.publish(lifecycle)
        return worker

    async def heartbeat(self, worker_id: str, beat: Heartbeat, *, scope: Scope = UNSCOPED) -> HeartbeatAck:
        now = self.core.clock()
        async with self.core.db.write() as conn:
            worker = await self._get(conn, worker_id, scope)
            values: dict[str, Any] = {"last_heartbeat": now}
            for name in ("current_task_count", "load_average", "memory_usage", "cpu_usage"):
                if getattr(beat, name) is not None:
                    values[name] = getattr(beat, name)
            if beat.metadata is not None:
                values["metadata"] = beat.metadata
            if worker.status is WorkerStatus.OFFLINE:
                values["status"] = WorkerStatus.ACTIVE  # back from a partition: its old runs were requeued
            # The worker row first, then its runs (skipping locked ones): the reaper takes the same
            # order, so the two cannot deadlock.
            updated = await worker_rows.update_worker(conn, worker_id, values)
            await run_rows.renew_leases(conn, worker_id, beat.current_tasks, now=now,
                                        lease_until=lease_deadline(now, self.lease),
                                        claim_grace=timedelta(seconds=self.lease))
            abort = await run_rows.not_held(conn, worker_id, beat.current_tasks)
        assert updated is not None
        return HeartbeatAck(updated, abort)

    async def poll(self, worker_id: str, *, capacity: int, running: list[int], wait: float,
                   reports: list[RunReport] | None = None, scope: Scope = UNSCOPED) -> PollResult:
        """Claim up to `capacity` runs, or wait until some are claimable, one of `running` must stop,
        or `wait` seconds pass. A wake-up from any server ends the wait at once. Outcomes the poll carries
        (`reports`, as the report endpoint takes them) are applied first, in the claim's transaction: a busy
        worker then needs one request per batch of runs instead of two."""
        deadline = time.monotonic() + max(0.0, min(wait, self.core.config.poll_wait_max))
        applied: ReportResult | None = None
        while True:
            woken = self.core.db.wakeup.current()
            result, waiting = await self._poll_once(worker_id, capacity, running, scope,
                                                    reports if applied is None else None)
            applied = applied or result.report
            remaining = deadline - time.monotonic()
            if result.runs or result.abort_runs or result.status is not WorkerStatus.ACTIVE or remaining <= 0:
                return replace(result, report=applied)
            woke, handed = await self._wait_for_work(woken, waiting, remaining)
            if handed is not None:
                run, task = handed
                return PollResult([run], [], WorkerStatus.ACTIVE, self.lease, {task.id: Command.of(task)}, applied)
            if not woke:
                return replace(result, report=applied)

    async def _wait_for_work(self, woken: asyncio.Event, waiting: WaitingPoll | None, timeout: float,
                             ) -> tuple[bool, tuple[Run, Task] | None]:
        """Wait for a wake-up or for a run handed over by a trigger on this server (dispatch.py). Returns
        whether anything happened before the timeout, and the run handed over, if one was."""
        woke = asyncio.ensure_future(woken.wait())
        pending: set[asyncio.Future[Any]] = {woke}
        if waiting is not None:
            self.core.dispatch.add(waiting)
            pending.add(waiting.handed)
        try:
            done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woke.cancel()
            if waiting is not None:
                self.core.dispatch.remove(waiting)
        if waiting is not None and waiting.taken:
            # A trigger reserved this poll: its transaction decides, and its run must not be dropped.
            return True, await asyncio.shield(waiting.handed)
        return bool(done), None

    async def _poll_once(self, worker_id: str, capacity: int, running: list[int], scope: Scope,
                         reports: list[RunReport] | None) -> tuple[PollResult, WaitingPoll | None]:
        """One claim, after the outcomes given; with it, what a trigger needs to hand this poll a run while
        it waits (None when the worker cannot take one)."""
        now = self.core.clock()
        waiting = None
        lifecycle = self.core.lifecycle()
        applied = None
        async with self.core.db.write() as conn:
            worker = await self._get(conn, worker_id, scope)
            if reports:
                applied = await self._apply_reports(conn, lifecycle, worker, reports, now)
            abort = await run_rows.not_held(conn, worker_id, running)
            claimed: list[Run] = []
            commands: dict[int, Command] = {}
            if worker.status is WorkerStatus.ACTIVE and capacity > 0:
                # The worker's own list is the truth about its free slots: the database still shows
                # runs whose outcome report is on its way, and counting those would stall the claim.
                room = worker.max_concurrent_tasks - len(running)
                # Only runs of the worker's own project, whoever's credential is polling.
                claimed, commands = await run_rows.claim(conn, project_id=worker.project_id, worker_id=worker_id,
                                               hostname=worker.hostname,
                                               task_types=list(worker.task_types), limit=min(capacity, room),
                                               now=now, lease_until=lease_deadline(now, self.lease))
                if room > 0:
                    waiting = WaitingPoll(worker_id, worker.project_id, worker.hostname,
                                          frozenset(worker.task_types))
            # A poll shows the worker alive; a busy worker polls many times a second, and the reaper needs
            # no finer a mark than this.
            seen = worker.last_heartbeat
            if seen is None or not timedelta(0) <= now - seen < SEEN_RESOLUTION:
                await worker_rows.mark_seen(conn, worker_id, now)
        if applied is not None:
            self.core.publish(lifecycle)
        return PollResult(claimed, abort, worker.status, self.lease, commands, applied), waiting

    async def hand_over(self, conn: AsyncConnection, run: Run, poll: WaitingPoll, now: datetime) -> Run | None:
        """Move a queued run to running for a waiting poll, as its claim would (dispatch.py); None when
        the worker is no longer active."""
        return await run_rows.hand_over(conn, run.id, worker_id=poll.worker_id, hostname=poll.hostname, now=now,
                                        lease_until=lease_deadline(now, self.lease))

    async def report(self, worker_id: str, reports: list[RunReport], *, scope: Scope = UNSCOPED) -> ReportResult:
        """Outcomes of several runs in one transaction (their logs and samples go through tracking
        ingestion, which the worker calls first). Writes from an attempt that no longer holds its run are
        refused one by one (StaleAttempt) without failing the others."""
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            worker = await self._get(conn, worker_id, scope)
            result = await self._apply_reports(conn, lifecycle, worker, reports, now)
        self.core.publish(lifecycle)
        return result

    async def _apply_reports(self, conn: AsyncConnection, lifecycle: RunLifecycle, worker: Worker,
                             reports: list[RunReport], now: datetime) -> ReportResult:
        accepted: list[int] = []
        rejected: list[dict[str, Any]] = []
        outcomes = [_outcome(rep) for rep in reports]
        if all(outcome is not None for outcome in outcomes):
            # The usual report (every run finished by the attempt that holds it, nothing to retry or
            # release) is applied to all its runs at once; `moved` is None when it is not that.
            plain = [outcome for outcome in outcomes if outcome is not None]
            moved = await lifecycle.finish_plainly(conn, plain, worker_id=worker.id, project_id=worker.project_id,
                                                   now=now)
            if moved is not None:
                done = {run.id for run in moved}
                for outcome in plain:
                    if outcome.run_id in done:
                        accepted.append(outcome.run_id)
                    else:
                        rejected.append({"run_id": outcome.run_id, "code": StaleAttempt.code,
                                         "message": f"run {outcome.run_id} changed while the report was applied"})
                return ReportResult(accepted, rejected)
        # Runs of another project read as missing ("does not exist"), never as someone else's attempt.
        runs = {r.id: r for r in await run_rows.get_runs(conn, [rep.run_id for rep in reports],
                                                         project_id=worker.project_id)}
        # One look at run_waits for the whole batch spares each run its own wait bookkeeping.
        lifecycle.known_unwaited = set(runs) - await run_rows.runs_in_waits(conn, list(runs))
        # Finishing a run updates its task's row: in task order, so that two workers' reports touching the
        # same tasks lock them in the same order and cannot deadlock.
        for rep in sorted(reports, key=lambda r: (runs[r.run_id].task_id if r.run_id in runs else 0, r.run_id)):
            try:
                await self._apply(conn, lifecycle, worker.id, runs.get(rep.run_id), rep, now)
                accepted.append(rep.run_id)
            except (StaleAttempt, NotFound, ValidationFailed) as exc:
                rejected.append({"run_id": rep.run_id, "code": exc.code, "message": exc.message})
        return ReportResult(accepted, rejected)

    async def _apply(self, conn: AsyncConnection, lifecycle: RunLifecycle, worker_id: str, run: Run | None,
                     rep: RunReport, now: Any) -> None:
        if run is None:
            raise NotFound(f"run {rep.run_id} does not exist")
        if rep.outcome is not None and rep.outcome not in OUTCOMES:
            raise ValidationFailed(f"unknown outcome '{rep.outcome}'", field="outcome", rule="one_of",
                                   value=rep.outcome)
        same_attempt = run.worker_id == worker_id and run.attempt == rep.attempt
        if same_attempt and rep.outcome is not None and run.status is _FINAL_OF[rep.outcome]:
            return  # the same outcome again (a retry after a lost answer): it is already applied
        # An aborted run's own attempt may still send its last lines and its kill notice.
        if not same_attempt or run.status not in (RunStatus.RUNNING, RunStatus.ABORTED):
            raise StaleAttempt(f"attempt {rep.attempt} of run {rep.run_id} no longer holds it "
                               f"(now {run.status.value}, attempt {run.attempt})")
        if run.status is not RunStatus.RUNNING:
            return
        if rep.outcome is None:
            return
        values = {"result": rep.result, "exit_code": rep.exit_code}
        if rep.outcome == "completed":
            values["error_message"] = None
            moved = await lifecycle.move(conn, run, RunStatus.COMPLETED, now=now, values=values,
                                         attempt=rep.attempt, worker_id=worker_id)
        elif rep.outcome == "aborted":
            moved = await lifecycle.move(conn, run, RunStatus.ABORTED, now=now,
                                         values={**values, "error_message": rep.error_message or "aborted"},
                                         attempt=rep.attempt, worker_id=worker_id,
                                         reason=rep.error_message or "aborted on the worker")
        else:
            moved = await lifecycle.fail_attempt(conn, run, now=now, values=values,
                                                 error=rep.error_message or rep.outcome)
        if moved is None:
            raise StaleAttempt(f"run {run.id} changed while the report was applied")

    async def update(self, worker_id: str, changes: dict[str, Any], *, scope: Scope = UNSCOPED) -> Worker:
        if "status" in changes and changes["status"] not in {s.value for s in WorkerStatus}:
            raise ValidationFailed("status must be one of active, draining, offline", field="status",
                                   rule="one_of", value=changes["status"])
        if "task_types" in changes:
            unknown = sorted(set(changes["task_types"]) - self.core.config.task_types)
            if unknown:
                raise ValidationFailed(f"unknown task types: {', '.join(unknown)}", field="task_types",
                                       rule="one_of", value=changes["task_types"])
        async with self.core.db.write() as conn:
            await self._get(conn, worker_id, scope)
            worker = await worker_rows.update_worker(conn, worker_id, changes)
            await run_rows.notify(conn)  # a draining worker hears it on its next poll
        assert worker is not None
        self.core.wake()
        return worker

    async def unregister(self, worker_id: str, *, scope: Scope = UNSCOPED) -> str:
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            await self._get(conn, worker_id, scope)
            await self._requeue_held(conn, lifecycle, worker_id, now, "worker unregistered")
            await worker_rows.update_worker(conn, worker_id, {"deleted": True, "status": WorkerStatus.OFFLINE})
        self.core.publish(lifecycle)
        return worker_id

    async def get(self, worker_id: str, *, scope: Scope = UNSCOPED) -> WorkerDetail:
        async with self.core.db.read() as conn:
            worker = await self._get(conn, worker_id, scope)
            current = await run_rows.runs_of_worker(conn, worker_id)
            stats = await run_rows.worker_statistics(conn, worker_id)
        stats["uptime"] = format_duration((self.core.clock() - worker.registered_at).total_seconds()) \
            if worker.status is not WorkerStatus.OFFLINE else "0m"
        return WorkerDetail(worker, current, stats)

    async def list(self, *, status: str | None = None, task_type: str | None = None,
                   hostname: str | None = None, page: PageRequest,
                   scope: Scope = UNSCOPED) -> tuple[list[Worker], int]:
        if page.sort not in worker_rows.SORTABLE:
            raise ValidationFailed(f"cannot sort workers by '{page.sort}'", field="sort", rule="one_of",
                                   value=page.sort)
        if status is not None and status not in {s.value for s in WorkerStatus}:
            raise ValidationFailed("status must be one of active, draining, offline", field="status",
                                   rule="one_of", value=status)
        if task_type is not None and task_type not in self.core.config.task_types:
            raise ValidationFailed(f"unknown task_type '{task_type}'", field="task_type", rule="one_of",
                                   value=task_type)
        async with self.core.db.read() as conn:
            return await worker_rows.list_workers(conn, project_id=scope.project_id, status=status,
                                                  task_type=task_type, hostname=hostname, page=page)

    async def reap(self) -> int:
        """Leader only: workers silent past their lease go offline; runs whose lease lapsed become a new
        attempt or fail by their retry policy. Returns how many runs were recovered."""
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            for worker in await worker_rows.lapsed(conn, now - timedelta(seconds=self.lease)):
                await worker_rows.update_worker(conn, worker.id, {"status": WorkerStatus.OFFLINE,
                                                                  "current_task_count": 0})
            expired = await run_rows.expired_leases(conn, now)
            for run in expired:
                await lifecycle.fail_attempt(
                    conn, run, now=now, immediate=True,
                    error=f"lease lost: worker {run.worker_id} stopped heartbeating")
        self.core.publish(lifecycle)
        return len(expired)

    async def _requeue_held(self, conn: AsyncConnection, lifecycle: RunLifecycle, worker_id: str, now: Any,
                            why: str) -> None:
        for run in await run_rows.runs_of_worker(conn, worker_id):
            await lifecycle.fail_attempt(conn, run, now=now, immediate=True, error=f"{why} while running it")

    async def _get(self, conn: AsyncConnection, worker_id: str, scope: Scope) -> Worker:
        # A worker of another project is "not found", in the same words as one that never existed.
        worker = await worker_rows.get_worker(conn, worker_id, project_id=scope.project_id)
        if worker is None:
            raise NotFound(f"worker '{worker_id}' does not exist", resource="worker", id=worker_id)
        return worker


def _outcome(rep: RunReport) -> Outcome | None:
    """The final status a report means if no retry follows (None: no outcome, or not one of ours)."""
    if rep.outcome == "completed":
        return Outcome(rep.run_id, rep.attempt, RunStatus.COMPLETED, rep.result, rep.exit_code, None, None)
    if rep.outcome == "aborted":
        return Outcome(rep.run_id, rep.attempt, RunStatus.ABORTED, rep.result, rep.exit_code,
                       rep.error_message or "aborted", rep.error_message or "aborted on the worker")
    if rep.outcome in ("failed", "timed_out"):
        error = rep.error_message or rep.outcome
        return Outcome(rep.run_id, rep.attempt, RunStatus.FAILED, rep.result, rep.exit_code, error, error)
    return None


def format_duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {mins}m"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m"

