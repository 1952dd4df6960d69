"""Cron: turn due schedule slots into runs, exactly once per slot."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from taskyard.domain.cron import CatchupPolicy, CronError, CronSchedule
from taskyard.domain.status import TriggerKind
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage.leader import LeaderLock

if TYPE_CHECKING:
    from taskyard.services.core import Core

log = logging.getLogger("taskyard.scheduler")

BATCH = 500


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
        fired = 0
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            for task in await task_rows.due_tasks(conn, now, BATCH):
                assert task.schedule is not None and task.next_run_at is not None
                try:
                    schedule = CronSchedule.parse(task.schedule, task.timezone)
                except CronError as exc:
                    log.error("task %s has an unusable schedule: %s", task.id, exc)
                    await task_rows.update_task(conn, task.id, {"next_run_at": None})
                    continue
                policy = CatchupPolicy(task.catchup)
                for slot in schedule.due_slots(task.next_run_at, now, policy):
                    run = await lifecycle.create(conn, task, now=now, trigger=TriggerKind.CRON,
                                                 scheduled_for=slot, reason=f"cron slot {slot.isoformat()}")
                    if run is not None:
                        fired += 1
                        log.info("cron fired task %s for %s", task.name, slot.isoformat(),
                                 extra={"ctx": {"task_id": task.id, "run_id": run.id,
                                                "lag_seconds": round((now - slot).total_seconds(), 3)}})
                await task_rows.update_task(conn, task.id, {"next_run_at": schedule.next_after(now)})
            await self._wake_for_backoff(conn, now)
        self.last_tick_at = now
        self.fired_total += fired
        self.core.publish(lifecycle)
        return fired

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
