"""The leader's loops: fire cron slots, reap lapsed leases. Every server runs them; only the holder of
the leader lock does the work, the others stand by and take over if it goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from taskyard.domain.errors import TaskyardError
from taskyard.services.core import Core

log = logging.getLogger("taskyard.scheduler")


@dataclass(frozen=True)
class LoopTimings:
    scheduler_interval: float = 1.0
    reaper_interval: float = 2.0
    standby_retry: float = 2.0
    retention_interval: float = 3600.0
    tally_interval: float = 5.0


class LeaderLoops:
    def __init__(self, core: Core, timings: LoopTimings) -> None:
        self.core = core
        self.timings = timings
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._cron(), name="taskyard-cron"),
                       asyncio.create_task(self._reaper(), name="taskyard-reaper"),
                       asyncio.create_task(self._retention(), name="taskyard-retention"),
                       asyncio.create_task(self._tallies(), name="taskyard-tallies")]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.core.scheduling.release_leadership()

    async def _lead(self) -> bool:
        was = self.core.scheduling.is_leader
        now = await self.core.scheduling.acquire_leadership()
        if now and not was:
            log.info("this server now leads the scheduler and the reaper")
        elif was and not now:
            log.warning("this server lost the scheduler lead")
        return now

    async def _cron(self) -> None:
        while not self._stop.is_set():
            try:
                if await self._lead():
                    await self.core.scheduling.tick()
                    pause = await self.core.scheduling.seconds_until_due(self.timings.scheduler_interval)
                else:
                    pause = self.timings.standby_retry
            except (TaskyardError, OSError) as exc:
                log.error("cron tick failed: %s", exc)
                pause = self.timings.standby_retry
            except Exception:
                log.exception("cron tick failed")
                pause = self.timings.standby_retry
            await self.core.scheduling.wait_for_change(max(pause, 0.005))

    async def _reaper(self) -> None:
        while not self._stop.is_set():
            try:
                if self.core.scheduling.is_leader:
                    recovered = await self.core.workers.reap()
                    if recovered:
                        log.warning("recovered %d runs whose worker stopped heartbeating", recovered,
                                    extra={"ctx": {"runs": recovered}})
            except Exception:
                log.exception("lease reaper failed")
            await asyncio.sleep(self.timings.reaper_interval)

    async def _retention(self) -> None:
        await asyncio.sleep(min(60.0, self.timings.retention_interval))  # let start-up traffic settle first
        while not self._stop.is_set():
            try:
                if self.core.scheduling.is_leader:
                    removed = await self.core.retention.purge()
                    if any(removed.values()):
                        log.info("retention removed %s", removed, extra={"ctx": removed})
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(self.timings.retention_interval)

    async def _tallies(self) -> None:
        """Count finished runs into the tallies that statistics read (storage/tallies.py)."""
        while not self._stop.is_set():
            try:
                if self.core.scheduling.is_leader:
                    await self.core.tallies.advance()
            except Exception:
                log.exception("tallying finished runs failed")
            await asyncio.sleep(self.timings.tally_interval)
