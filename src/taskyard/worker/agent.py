"""The worker agent: registers with the server, long-polls for runs, executes them and reports back.

It speaks HTTP only. Five side tasks share the work and are supervised together, so that if one of
them dies unexpectedly the whole worker stops with an error instead of limping on half-alive:

* the poll loop keeps exactly one long-poll in flight, also when there is no free slot, because the
  poll answer is how aborts reach the worker within milliseconds;
* the heartbeat loop renews the leases of the runs the worker holds and reports machine load;
* the report flusher (:mod:`taskyard.worker.reports`) sends the logs and outcomes of all runs through
  one shared buffer, so one request carries many runs;
* the lease watch kills every run once the server has been silent for longer than the lease, since
  by then the server has handed those runs to another worker;
* the sampler measures each run's process tree every ``sample_interval`` seconds (off at 0); the
  samples go out with the run's log lines, and its totals (CPU seconds, peak memory) with its outcome.

The runs themselves live in :mod:`taskyard.worker.runs`, the registration in
:mod:`taskyard.worker.session`, the HTTP plumbing in :mod:`taskyard.worker.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from taskyard.settings import WorkerSettings
from taskyard.worker import system_info
from taskyard.worker.executors import PROCESS_TASK_TYPES
from taskyard.worker.protocol import Backoff, Json, RegistrationRefused, ServerApi, ServerError
from taskyard.worker.reports import REQUEST_MAX_RUNS, Pending, ReportBuffer, ReportFlusher, rejections
from taskyard.worker.runs import Runs
from taskyard.worker.session import Session

__all__ = ["WorkerAgent"]

logger = logging.getLogger("taskyard.worker")

_POLL_TIMEOUT_MARGIN_SECONDS = 10.0
_MAX_POLL_WAIT_SECONDS = 60.0  # the server's limit
_MAX_CAPACITY = 1000  # the server's limit
# The server answers polls at once while the worker is draining or offline; without a pause the poll
# loop would spin.
_IDLE_POLL_PAUSE_SECONDS = 0.5
# A poll that comes back empty almost at once means the server is not long-polling (a proxy, an old
# server); this keeps such a setup from turning the loop into a busy loop.
_QUICK_POLL_SECONDS = 0.05
_QUICK_POLL_PAUSE_SECONDS = 0.2
_LEASE_CHECK_SECONDS = 0.1


class WorkerAgent:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        client: httpx.AsyncClient | None = None,
        max_runs: int | None = None,
    ) -> None:
        self.settings = settings
        self._max_runs = max_runs
        self._poll_wait = min(settings.poll_wait, _MAX_POLL_WAIT_SECONDS)

        self._stopping = asyncio.Event()
        self._immediate = asyncio.Event()
        # Set whenever something changes that may make the in-flight poll the wrong one.
        self._wake = asyncio.Event()
        self._closing = False
        self._started = False

        self._api = ServerApi(settings.server, settings.api_key, client)
        self._buffer = ReportBuffer()
        self._runs = Runs(settings, self._buffer, api_url=self._api.base_url, on_finished=self._run_finished)
        self._session = Session(settings, self._api, wake=self._wake, on_forgotten=self._runs.forget)
        self._reports = ReportFlusher(self._buffer, self._api, self._session, reject=self._runs.reject)

    @property
    def worker_id(self) -> str | None:
        return self._session.worker_id

    # -- control ----------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, graceful: bool = True) -> None:
        """Ask the worker to stop; a second request (or graceful=False) stops it immediately.

        Only sets events, so it may be called from a signal handler callback.
        """
        if not graceful or self._stopping.is_set():
            self._immediate.set()
        self._stopping.set()
        self._set_polls_busy(False)
        self._wake.set()

    async def run(self) -> int:
        if self._started:
            raise RuntimeError("a WorkerAgent can only run once")
        self._started = True
        try:
            return await self._run()
        finally:
            await self._api.aclose()

    async def _run(self) -> int:
        await self._session.identify()
        try:
            if not await self._session.register_first(self._stopping):
                return 0
        except RegistrationRefused as exc:
            logger.error("%s", exc)
            return 1

        if PROCESS_TASK_TYPES.intersection(self.settings.task_type_list):
            # Before the first claim, so that no run is ever without one.
            self._runs.guardian.start()
        side = {
            "poll": asyncio.create_task(self._poll_loop(), name="taskyard-worker-poll"),
            "heartbeat": asyncio.create_task(self._heartbeat_loop(), name="taskyard-worker-heartbeat"),
            "report": asyncio.create_task(self._reports.loop(), name="taskyard-worker-report"),
            "lease": asyncio.create_task(self._lease_loop(), name="taskyard-worker-lease"),
        }
        if self.settings.sample_interval > 0:
            side["samples"] = asyncio.create_task(self._runs.sample_loop(), name="taskyard-worker-samples")
        exit_code = 0
        try:
            crashed = await self._watch(side, self._stopping)
            if crashed is None:
                crashed = await self._drain(side)
            if crashed is not None:
                exit_code = 1
            await self._runs.abort_remaining()
            self._closing = True
            side["poll"].cancel()
            await asyncio.gather(side["poll"], return_exceptions=True)
            # Heartbeats go on during the final flush: they keep the leases of runs whose outcomes
            # are still waiting to be delivered.
            await self._reports.final_flush(side["report"])
            background = [side[name] for name in ("heartbeat", "lease", "samples") if name in side]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._session.unregister()
        finally:
            self._closing = True
            leftovers = [*side.values(), *self._runs.tasks()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await asyncio.to_thread(self._runs.guardian.stop)
        logger.info("worker %s stopped (%d run(s) finished)", self.worker_id, self._runs.finished)
        return exit_code

    async def _watch(
        self, side: dict[str, asyncio.Task[None]], *events: asyncio.Event, timeout: float | None = None
    ) -> str | None:
        """Waits for any of ``events`` or the timeout; returns the name of a side task that ended first."""
        waiters = [asyncio.create_task(event.wait()) for event in events]
        try:
            await asyncio.wait([*side.values(), *waiters], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        for name, task in side.items():
            if task.done():
                if task.cancelled():
                    logger.error("the %s loop was cancelled; stopping the worker", name)
                elif task.exception() is not None:
                    logger.error("the %s loop failed; stopping the worker", name, exc_info=task.exception())
                else:
                    logger.error("the %s loop ended unexpectedly; stopping the worker", name)
                self._stopping.set()
                self._immediate.set()
                return name
        return None

    async def _drain(self, side: dict[str, asyncio.Task[None]]) -> str | None:
        running = len(self._runs.executions)
        if not running:
            logger.info("stopping: no runs in progress")
            return None
        if self._immediate.is_set():
            logger.info("stopping now: aborting %d run(s)", running)
            return None
        grace = self.settings.shutdown_grace_seconds
        logger.info("stopping: no new runs; waiting up to %gs for %d run(s) in progress", grace, running)
        return await self._watch(side, self._runs.idle, self._immediate, timeout=grace)

    def _run_finished(self) -> None:
        self._wake.set()
        finished = self._runs.finished
        if self._max_runs is not None and finished >= self._max_runs and not self._stopping.is_set():
            logger.info("finished %d run(s), the most this worker was asked to run; stopping", finished)
            self.stop()

    # -- polling ------------------------------------------------------------------------------------

    def _claim_capacity(self) -> int:
        session = self._session
        if (
            self._stopping.is_set()
            or session.lease_lost
            or session.server_status != "active"
            or not session.registered.is_set()
        ):
            return 0
        free = self.settings.concurrency - len(self._runs.executions)
        if self._max_runs is not None:
            free = min(free, self._max_runs - self._runs.claimed)
        return max(0, min(free, _MAX_CAPACITY))

    async def _poll_loop(self) -> None:
        backoff = Backoff()
        session = self._session
        buffer = self._buffer
        while True:
            await session.registered.wait()
            generation, worker_id = session.generation, session.worker_id
            capacity = self._claim_capacity()
            body: Json = {"capacity": capacity, "running": self._runs.live_run_ids(), "wait": self._poll_wait}
            # Outcomes ride on a claiming poll: a busy worker then sends one request per batch of runs. A poll
            # that cannot claim is cut off when slots free up, so it carries none.
            riding = buffer.take_outcomes(REQUEST_MAX_RUNS) if capacity > 0 else []
            if riding:
                body["reports"] = [part.to_json() for part in riding]
            self._wake.clear()
            sent = time.monotonic()
            request = asyncio.create_task(
                self._api.call(
                    "POST",
                    f"/workers/{worker_id}/poll",
                    body,
                    timeout=self._poll_wait + _POLL_TIMEOUT_MARGIN_SECONDS,
                )
            )
            try:
                answer = await self._await_poll(request, capacity)
            except ServerError as exc:
                if exc.status == 404:
                    buffer.landed()  # stale with the registration they belonged to
                    await session.reregister(generation)
                else:
                    buffer.restore(riding)
                    buffer.landed()
                    self._api.refused("poll", exc)
                    await asyncio.sleep(exc.retry_after or backoff.next())
                continue
            except httpx.HTTPError as exc:
                buffer.restore(riding)
                buffer.landed()
                self._api.unreachable("poll", exc)
                await asyncio.sleep(backoff.next())
                continue
            except BaseException:
                buffer.restore(riding)
                buffer.landed()
                raise
            if answer is None:
                # Superseded: the server may or may not have applied them; a second delivery is accepted as
                # the same outcome.
                buffer.restore(riding)
                buffer.landed()
                continue
            buffer.landed()
            backoff.reset()
            self._settle_reports(riding, answer.get("report"))
            runs = answer.get("runs") or []
            self._set_polls_busy(bool(runs))
            # Runs claimed in this answer got fresh leases just now, whatever the send time was.
            session.contact(time.monotonic() if runs else sent)
            session.apply_answer(answer)
            aborts = answer.get("abort_runs") or []
            self._runs.abort(aborts, "poll")
            for run in runs:
                self._runs.start(run)
            if session.server_status != "active" and not self._closing:
                await self._pause_unless_woken(_IDLE_POLL_PAUSE_SECONDS)
            elif not runs and not aborts and time.monotonic() - sent < _QUICK_POLL_SECONDS:
                await self._pause_unless_woken(_QUICK_POLL_PAUSE_SECONDS)

    def _set_polls_busy(self, busy: bool) -> None:
        """Whether outcomes may wait for the next poll rather than go out on their own (reports.py)."""
        busy = busy and not self._stopping.is_set() and not self._session.lease_lost
        if busy != self._buffer.polls_busy:
            self._buffer.polls_busy = busy
            self._buffer.changed.set()

    def _settle_reports(self, riding: list[Pending], report: object) -> None:
        """Outcomes the server refused with the poll's answer: their attempts no longer hold their runs."""
        if not riding:
            return
        if not isinstance(report, dict):
            # A server that does not take outcomes on polls ignored them: they go the usual way.
            self._buffer.restore(riding)
            return
        for run_id, attempt, message in rejections(riding, report):
            self._runs.reject(run_id, attempt, message)

    async def _await_poll(self, request: asyncio.Task[Json], capacity: int) -> Json | None:
        """The poll's answer, or None when it was cancelled because its capacity became wrong."""
        try:
            while True:
                woken = asyncio.create_task(self._wake.wait())
                try:
                    await asyncio.wait({request, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                if request.done():
                    return request.result()
                self._wake.clear()
                if self._poll_superseded(capacity):
                    request.cancel()
                    await asyncio.gather(request, return_exceptions=True)
                    return None
        except asyncio.CancelledError:
            request.cancel()
            raise

    def _poll_superseded(self, capacity: int) -> bool:
        now = self._claim_capacity()
        if capacity == 0:
            # Nothing can be claimed by a poll with capacity 0, so cutting it off loses nothing.
            return now > 0
        # A claiming poll is only cut off when claims must stop: the server may claim runs for it in
        # the meantime, and those lapse back to the queue only after the lease.
        return now == 0 and (self._stopping.is_set() or self._session.lease_lost)

    async def _pause_unless_woken(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # -- heartbeats and leases ------------------------------------------------------------------------

    def _heartbeat_interval(self) -> float:
        return max(0.05, min(self.settings.heartbeat_interval, self._session.lease_seconds / 3))

    async def _heartbeat_loop(self) -> None:
        session = self._session
        while True:
            await session.registered.wait()
            generation, worker_id = session.generation, session.worker_id
            stats = system_info.sample()
            held = list(dict.fromkeys([*self._runs.live_run_ids(), *self._buffer.held_run_ids()]))
            body = {
                "current_task_count": len(self._runs.executions),
                "load_average": stats.load_average,
                "memory_usage": stats.memory_usage,
                "cpu_usage": stats.cpu_usage,
                "current_tasks": held,
            }
            sent = time.monotonic()
            try:
                ack = await self._api.call(
                    "POST",
                    f"/workers/{worker_id}/heartbeat",
                    body,
                    # A hung heartbeat must not outlive the lease it is meant to renew.
                    timeout=max(1.0, min(10.0, session.lease_seconds / 3)),
                )
            except ServerError as exc:
                if exc.status == 404:
                    await session.reregister(generation)
                    continue
                self._api.refused("heartbeat", exc)
            except httpx.HTTPError as exc:
                self._api.unreachable("heartbeat", exc)
            else:
                session.contact(sent)
                session.apply_answer(ack)
                self._runs.abort(ack.get("abort_runs") or [], "heartbeat")
            await asyncio.sleep(self._heartbeat_interval())

    async def _lease_loop(self) -> None:
        session = self._session
        while True:
            if session.registered.is_set():
                silent = time.monotonic() - session.last_contact
                if silent > session.lease_seconds:
                    self._lose_lease(silent)
            await asyncio.sleep(_LEASE_CHECK_SECONDS)

    def _lose_lease(self, silent: float) -> None:
        killed = self._runs.lose("the lease was lost")
        if not self._session.lease_lost:
            self._session.lease_lost = True
            self._set_polls_busy(False)
            logger.error(
                "no answer from the server for %.1fs (lease %gs): it has given our runs to other workers; "
                "killing %d run(s) and claiming nothing until it answers again",
                silent,
                self._session.lease_seconds,
                killed,
            )
            self._wake.set()
