"""Cron: turn due schedule slots into runs, exactly once per slot."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from taskyard.domain.cron import CatchupPolicy, CronError, CronSchedule
from taskyard.domain.status import TriggerKind
from taskyard.storage import cron as cron_rows
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage.cron import DueSchedule
from taskyard.storage.leader import LeaderLock

if TYPE_CHECKING:
    from taskyard.services.core import Core

log = logging.getLogger("taskyard.scheduler")

# Due tasks fired per transaction: large enough that a minute of 10,000 schedules takes a few ticks.
BATCH = 2000


class SchedulingService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._changed = asyncio.Event()
        self.leader = LeaderLock(core.db)
        self.is_leader = False
        self.last_tick_at: datetime | None = None
        self.fired_total = 0
        self._available_checked_at: datetime | None = None

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
        """Fire every due slot. Returns the number of runs created."""
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            plan = plan_slots(await cron_rows.due_schedules(conn, now, BATCH), now)
            # Tasks without dependencies (nearly all) fire together, set-wise; a task with dependencies may
            # trigger runs of them, so it goes through the one-by-one path.
            created = await lifecycle.create_cron_runs(
                conn, [(due.task_id, slot) for due, slots in plan.slots if not due.has_dependencies
                       for slot in slots], now=now)
            for due, slots in plan.slots:
                task = await task_rows.get_task(conn, due.task_id) if due.has_dependencies else None
                if task is None:
                    continue
                for slot in slots:
                    run = await lifecycle.create(conn, task, now=now, trigger=TriggerKind.CRON,
                                                 scheduled_for=slot, reason=f"cron slot {slot.isoformat()}")
                    if run is not None:
                        created.append((run.id, due.task_id, slot))
            fired_tasks = {task_id for _, task_id, _ in created}
            await cron_rows.plan_next(conn, plan.next_run_at, fired_tasks, now)
            await self._wake_for_backoff(conn, now)
        if created:
            lag = (now - min(slot for _, _, slot in created)).total_seconds()
            log.info("cron fired %d runs of %d tasks", len(created), len(fired_tasks),
                     extra={"ctx": {"runs": len(created), "tasks": len(fired_tasks), "max_lag_seconds": round(lag, 3)}})
        self.last_tick_at = now
        self.fired_total += len(created)
        self.core.publish(lifecycle)
        return len(created)

    async def _wake_for_backoff(self, conn: object, now: datetime) -> None:
        """Runs whose retry backoff ended since the last tick are claimable: wake the pollers."""
        since = self._available_checked_at or now - timedelta(seconds=5)
        if await run_rows.any_became_available(conn, since, now):  # type: ignore[arg-type]
            await run_rows.notify(conn)  # type: ignore[arg-type]
            self.core.wake()
        self._available_checked_at = now

    async def seconds_until_due(self, cap: float) -> float:
        async with self.core.db.read() as conn:
            earliest = await task_rows.earliest_next_run(conn)
        if earliest is None:
            return cap
        return max(0.0, min(cap, (earliest - self.core.clock()).total_seconds()))


@dataclass
class SlotPlan:
    slots: list[tuple[DueSchedule, list[datetime]]] = field(default_factory=list)  # what fires now, per task
    next_run_at: dict[int, datetime | None] = field(default_factory=dict)  # None: the schedule is unusable


def plan_slots(due: list[DueSchedule], now: datetime) -> SlotPlan:
    """What each due task fires now and when it is due next. Tasks that share a schedule, zone, policy and
    planned slot share the answer, so a minute of 10,000 identical schedules walks croniter once."""
    plan = SlotPlan()
    answers: dict[tuple[str, str, str, datetime], tuple[list[datetime], datetime] | None] = {}
    for task in due:
        key = (task.schedule, task.timezone, task.catchup, task.next_run_at)
        if key not in answers:
            try:
                schedule = CronSchedule.parse(task.schedule, task.timezone)
                answers[key] = (schedule.due_slots(task.next_run_at, now, CatchupPolicy(task.catchup)),
                                schedule.next_after(now))
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
