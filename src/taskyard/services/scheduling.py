"""Cron: turn due schedule slots into runs, exactly once per slot.

Runs are created ahead of their slot: a tick creates the runs of every slot up to LOOKAHEAD ahead (for tasks
without dependencies), queued with `available_at` at the slot, so no worker can claim one before it. At the
slot the loop wakes again and wakes the pollers, so the only work left at the slot is the wake-up. A task
paused, or whose schedule changes, before such a slot has its runs for it cancelled (`cancel_runs_ahead`);
a task with dependencies fires at its slot, as before.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.cron import CatchupPolicy, CronError, CronSchedule
from taskyard.domain.models import Task
from taskyard.domain.status import RunStatus, TriggerKind
from taskyard.storage import cron as cron_rows
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage.cron import DueSchedule
from taskyard.storage.leader import LeaderLock

if TYPE_CHECKING:
    from taskyard.services.core import Core
    from taskyard.services.lifecycle import RunLifecycle

log = logging.getLogger("taskyard.scheduler")

# Due tasks fired per transaction: large enough that a minute of 10,000 schedules takes a few ticks.
BATCH = 2000
# How long before its slot a run is created. 10,000 tasks due at one second take 1-1.5 s to insert on
# PostgreSQL on a small machine (more under load), and a slot is late by as much when its runs are only
# created at it. Created this far ahead they are committed and waiting, and the slot costs a wake-up. Not a
# whole number of seconds: slots fall on whole seconds, so the ticks that create runs ahead fall between
# them and never hold up (SQLite: with their write lock) the claims of a slot that has just come.
LOOKAHEAD = timedelta(seconds=3.5)
# `slots_between` leaves out its start: starting just before a task's planned slot takes that slot in.
_JUST_BEFORE = timedelta(microseconds=1)


class SchedulingService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._changed = asyncio.Event()
        self.leader = LeaderLock(core.db)
        self.is_leader = False
        self.last_tick_at: datetime | None = None
        self.fired_total = 0
        self._available_checked_at: datetime | None = None
        self._next_available: datetime | None = None  # when a queued run next becomes claimable, as last seen

    def nudge(self) -> None:
        """A schedule changed: the loop re-plans now instead of after its sleep."""
        self._changed.set()

    async def wait_for_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return
        finally:
            self._changed.clear()

    async def acquire_leadership(self) -> bool:
        self.is_leader = await self.leader.try_acquire()
        return self.is_leader

    async def release_leadership(self) -> None:
        await self.leader.release()
        self.is_leader = False

    async def tick(self) -> int:
        """Wake the pollers for runs that became claimable, then fire every slot due by now and, for tasks
        without dependencies, every slot up to LOOKAHEAD ahead. Returns the number of runs created."""
        now = self.core.clock()
        await self._wake_for_available(now)
        horizon = now + LOOKAHEAD
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            schedules = await cron_rows.due_schedules(conn, now, horizon, BATCH)
            plan = plan_slots(schedules, now, horizon)
            # The tasks' rows first: a task changed since it was read does not fire (see plan_next).
            moved = await cron_rows.plan_next(conn, schedules, plan.next_run_at,
                                              {due.task_id for due, _ in plan.slots}, now)
            firing = [(due, slots) for due, slots in plan.slots if due.task_id in moved]
            # Tasks without dependencies (nearly all) fire together, set-wise; a task with dependencies may
            # trigger runs of them, so it goes through the one-by-one path, at its slot (never ahead).
            created = await lifecycle.create_cron_runs(
                conn, [(due.task_id, slot) for due, slots in firing if not due.has_dependencies
                       for slot in slots], now=now)
            for due, slots in firing:
                task = await task_rows.get_task(conn, due.task_id) if due.has_dependencies else None
                if task is None:
                    continue
                for slot in slots:
                    run = await lifecycle.create(conn, task, now=now, trigger=TriggerKind.CRON,
                                                 scheduled_for=slot, reason=f"cron slot {slot.isoformat()}")
                    if run is not None:
                        created.append((run.id, due.task_id, slot))
            fired_tasks = {task_id for _, task_id, _ in created}
        ahead = [slot for _, _, slot in created if slot > now]
        if ahead:
            self._next_available = min(ahead + ([self._next_available] if self._next_available else []))
        if len(ahead) < len(created):
            lag = (now - min(slot for _, _, slot in created)).total_seconds()
            log.info("cron fired %d runs of %d tasks", len(created), len(fired_tasks),
                     extra={"ctx": {"runs": len(created), "tasks": len(fired_tasks), "ahead": len(ahead),
                                    "max_lag_seconds": round(lag, 3)}})
        elif ahead:
            log.debug("cron created %d runs ahead of their slots", len(ahead), extra={"ctx": {"runs": len(ahead)}})
        self.last_tick_at = now
        self.fired_total += len(created)
        self.core.publish(lifecycle)
        return len(created)

    async def _wake_for_available(self, now: datetime) -> None:
        """Runs that became claimable since the last tick (the slot of runs created ahead came, a retry's
        backoff ended): wake the pollers. Before this tick's own writes, so their claims need not wait for
        them; and note when the next queued run becomes claimable, to wake then."""
        since = self._available_checked_at or now - timedelta(seconds=5)
        # The moment noted last time has come (mostly a slot whose runs were created ahead): wake the pollers
        # before looking at the queue, since that looks at every queued run.
        expected = self._next_available is not None and self._next_available <= now
        async with self.core.db.read() as conn:
            if expected:
                await self._wake(conn)
            became, self._next_available = await run_rows.availability(conn, since, now)
            if became and not expected:
                await self._wake(conn)
        self._available_checked_at = now

    async def _wake(self, conn: AsyncConnection) -> None:
        await run_rows.notify(conn)  # a read connection autocommits on PostgreSQL: other servers hear it now
        self.core.wake()

    async def seconds_until_due(self, cap: float) -> float:
        """Until the next tick has work: LOOKAHEAD before the next slot of a task that fires ahead, the next
        slot of a task that fires at its slot (it has dependencies), or the next moment a queued run becomes
        claimable (its slot, created ahead, or the end of a retry's backoff): its pollers are woken then."""
        async with self.core.db.read() as conn:
            ahead, at_slot = await cron_rows.next_due(conn)
        moments = [m for m in (ahead - LOOKAHEAD if ahead else None, at_slot, self._next_available) if m]
        if not moments:
            return cap
        return max(0.0, min(cap, (min(moments) - self.core.clock()).total_seconds()))


async def cancel_runs_ahead(conn: AsyncConnection, lifecycle: RunLifecycle, task: Task, *, now: datetime,
                            why: str) -> int:
    """Cancel (abort) the task's cron runs created ahead of a slot that has not come, because the task was
    paused or its schedule changed. A cancelled run keeps its slot, which stays taken: a task resumed, or
    given a schedule that has the same slot, within LOOKAHEAD of it skips it, as a slot is never given to
    two runs. Returns how many were cancelled."""
    cancelled = 0
    for run in await cron_rows.runs_ahead(conn, task.id, now):
        slot = run.scheduled_for or run.available_at
        reason = f"cancelled before its cron slot {slot.isoformat() if slot else '?'}: {why}"
        moved = await lifecycle.move(conn, run, RunStatus.ABORTED, now=now, reason=reason,
                                     values={"error_message": reason})
        cancelled += moved is not None
    return cancelled


@dataclass
class SlotPlan:
    slots: list[tuple[DueSchedule, list[datetime]]] = field(default_factory=list)  # what fires now, per task
    next_run_at: dict[int, datetime | None] = field(default_factory=dict)  # None: the schedule is unusable


def plan_slots(due: list[DueSchedule], now: datetime, horizon: datetime | None = None) -> SlotPlan:
    """What each due task fires now and when it is due next: its slots due by `now` under its catch-up
    policy, and for a task without dependencies its slots in (now, horizon] too, fired ahead; it is due next
    at its first slot after those. Tasks that share a schedule, zone, policy, planned slot and horizon share
    the answer, so a minute of 10,000 identical schedules walks croniter once."""
    plan = SlotPlan()
    answers: dict[tuple[str, str, str, datetime, datetime], tuple[list[datetime], datetime] | None] = {}
    for task in due:
        until = now if horizon is None or task.has_dependencies else max(now, horizon)
        key = (task.schedule, task.timezone, task.catchup, task.next_run_at, until)
        if key not in answers:
            try:
                schedule = CronSchedule.parse(task.schedule, task.timezone)
                past = schedule.due_slots(task.next_run_at, now, CatchupPolicy(task.catchup))
                ahead = schedule.slots_between(max(now, task.next_run_at - _JUST_BEFORE), until)
                answers[key] = (past + ahead, schedule.next_after(until))
            except CronError as exc:
                log.error("task %s has an unusable schedule: %s", task.task_id, exc)
                answers[key] = None
        answer = answers[key]
        if answer is None:
            plan.next_run_at[task.task_id] = None
            continue
        slots, next_run_at = answer
        if slots:
            plan.slots.append((task, slots))
        plan.next_run_at[task.task_id] = next_run_at
    return plan
