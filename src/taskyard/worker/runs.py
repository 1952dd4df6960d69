"""The runs a worker holds: each claimed run is an asyncio task around an executor.

This module starts them within the concurrency limit, aborts them when the server or the worker asks,
and turns each result into the outcome the report buffer sends (or into no outcome at all, once the
attempt no longer counts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from taskyard.settings import WorkerSettings
from taskyard.worker.executors import (
    ExecutionResult,
    ExecutionSpec,
    Guardian,
    LogLine,
    LogSink,
    Outcome,
    UnsupportedTaskTypeError,
    executor_for,
)
from taskyard.worker.protocol import Json, describe
from taskyard.worker.reports import ReportBuffer, line_json, system_line
from taskyard.worker.system_info import ProcessTreeSampler

logger = logging.getLogger("taskyard.worker")

# On top of kill_grace_seconds: executors also drain pipes and reap the process after the kill.
_ABORT_WAIT_MARGIN_SECONDS = 10.0


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False)
class Execution:
    run_id: int
    attempt: int
    task_name: str
    task_type: str
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    # Why the outcome must not be reported (the attempt lost its lease, the server refused it, the
    # worker is shutting down); None while the outcome still counts.
    lost: str | None = None
    # Once the server has refused the attempt, its log lines would be refused as well.
    silenced: bool = False
    server_abort: bool = False
    task: asyncio.Task[None] | None = None
    # Set once the executor has started the run's process group (process executors only), and taken
    # away again once the run has ended.
    sampler: ProcessTreeSampler | None = None
    # Clear while a measurement runs in a thread; its samples are queued by the time it is set again.
    between_samples: asyncio.Event = field(default_factory=_set_event)
    sample_due: float = 0.0


class Runs:
    """The runs in progress, keyed by (run id, attempt).

    ``on_finished`` is called after each run has ended and left the table.
    """

    def __init__(
        self, settings: WorkerSettings, buffer: ReportBuffer, *, api_url: str, on_finished: Callable[[], None]
    ) -> None:
        self.settings = settings
        self._buffer = buffer
        self._api_url = api_url
        self._on_finished = on_finished
        self.guardian = Guardian(settings.kill_grace_seconds)
        self.executions: dict[tuple[int, int], Execution] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self.claimed = 0
        self.finished = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [ex.task for ex in self.executions.values() if ex.task is not None]

    def live_run_ids(self) -> list[int]:
        # Runs already being killed are left out: listing them would make the server answer every
        # poll at once with the same abort until the process is gone.
        return [ex.run_id for ex in self.executions.values() if not ex.abort.is_set()]

    # -- starting and running -------------------------------------------------------------------------

    def start(self, run: Any) -> None:
        """Starts a run from a poll answer."""
        try:
            run_id = int(run["run_id"])
            attempt = int(run["attempt"])
        except (KeyError, TypeError, ValueError):
            logger.error("ignoring a malformed run in the poll answer: %r", run)
            return
        key = (run_id, attempt)
        if key in self.executions:
            logger.warning("the server handed out run %d attempt %d twice; ignoring the repeat", run_id, attempt)
            return
        ex = Execution(run_id, attempt, str(run.get("task_name") or ""), str(run.get("task_type") or ""))
        self.claimed += 1
        self.executions[key] = ex
        self.idle.clear()
        ex.task = asyncio.create_task(self._execute(ex, run), name=f"taskyard-run-{run_id}")
        ex.task.add_done_callback(_log_task_failure)
        logger.info("claimed run %d (attempt %d) of %s [%s]", run_id, attempt, ex.task_name or "?", ex.task_type)

    def _build_spec(self, ex: Execution, run: Json) -> ExecutionSpec:
        parameters = run.get("parameters") or {}
        metadata = run.get("metadata") or {}
        arguments = run.get("arguments") or []
        if not isinstance(parameters, dict) or not isinstance(metadata, dict) or not isinstance(arguments, list):
            raise ValueError("the run's parameters, metadata or arguments have the wrong type")
        raw_timeout = run.get("timeout_seconds")
        timeout = float(raw_timeout) if isinstance(raw_timeout, int | float) and raw_timeout > 0 else None
        env = {
            "TASKYARD_RUN_ID": str(ex.run_id),
            "TASKYARD_RUN_UUID": str(run.get("uuid") or ""),
            "TASKYARD_FUNCTION_NAME": ex.task_name,
            "TASKYARD_API_URL": self._api_url,
            "TASKYARD_PARAMS": json.dumps(parameters, default=str),
            "TASKYARD_ATTEMPT": str(ex.attempt),
        }
        if self.settings.api_key:
            env["TASKYARD_API_KEY"] = self.settings.api_key

        def started(pid: int) -> None:
            # Not measured at once: CPU percent compares with a previous measurement, so it would say 0.
            ex.sampler = ProcessTreeSampler(pid)
            ex.sample_due = time.monotonic() + self.settings.sample_interval

        return ExecutionSpec(
            run_id=ex.run_id,
            task_type=ex.task_type,
            command=str(run.get("command") or ""),
            arguments=[str(arg) for arg in arguments],
            parameters=parameters,
            metadata=metadata,
            timeout_seconds=timeout,
            env=env,
            on_start=started,
        )

    def _sink_for(self, ex: Execution) -> LogSink:
        async def sink(lines: list[LogLine]) -> None:
            if not ex.silenced:
                self._buffer.add_logs(ex.run_id, ex.attempt, [line_json(line) for line in lines])

        return sink

    async def _execute(self, ex: Execution, run: Json) -> None:
        try:
            try:
                spec = self._build_spec(ex, run)
                executor = executor_for(
                    ex.task_type,
                    kill_grace_seconds=self.settings.kill_grace_seconds,
                    allow_private_urls=self.settings.allow_private_urls,
                    guardian=self.guardian,
                )
            except (UnsupportedTaskTypeError, ValueError, TypeError) as exc:
                message = f"cannot run on this worker: {exc}"
                if not ex.silenced:
                    self._buffer.add_logs(ex.run_id, ex.attempt, [system_line(message, "error")])
                result = ExecutionResult(Outcome.FAILED, None, message, None)
            else:
                async with self._slots:
                    try:
                        result = await executor.run(spec, self._sink_for(ex), ex.abort)
                    except Exception as exc:
                        # Executors promise not to raise; if one does, the run fails, not the worker.
                        logger.exception("the %s executor crashed on run %d", ex.task_type, ex.run_id)
                        result = ExecutionResult(Outcome.FAILED, None, f"worker error: {describe(exc)}", None)
            sampler, ex.sampler = ex.sampler, None
            if sampler is not None:
                # The tree is gone by now, so what the measurements gathered while it ran goes with the
                # outcome; a measurement still under way is waited for, so the totals come last and count it.
                await ex.between_samples.wait()
                if not ex.silenced and ex.lost is None:
                    self._buffer.add_samples(ex.run_id, ex.attempt, sampler.totals())
            self._finish(ex, result)
        finally:
            self.executions.pop((ex.run_id, ex.attempt), None)
            self.finished += 1
            if not self.executions:
                self.idle.set()
            self._on_finished()

    def _finish(self, ex: Execution, result: ExecutionResult) -> None:
        elapsed = time.monotonic() - ex.started
        if ex.lost is not None:
            logger.warning(
                "run %d (attempt %d) ended after %.2fs without a report: %s", ex.run_id, ex.attempt, elapsed, ex.lost
            )
            return
        outcome = Outcome.ABORTED if ex.server_abort else result.outcome
        error_message = result.error_message
        if ex.server_abort and not error_message:
            error_message = "aborted"
        self._buffer.add_outcome(
            ex.run_id,
            ex.attempt,
            {
                "outcome": outcome.value,
                "result": result.result,
                "error_message": error_message,
                "exit_code": result.exit_code,
            },
        )
        logger.info("run %d (attempt %d) %s in %.2fs", ex.run_id, ex.attempt, outcome.value, elapsed)

    # -- process-tree samples --------------------------------------------------------------------------

    async def sample(self, ex: Execution) -> None:
        """Measures the run's process tree and queues the samples to go out with its next log lines."""
        sampler = ex.sampler
        if sampler is None or not ex.between_samples.is_set() or ex.silenced or ex.lost is not None:
            return
        ex.between_samples.clear()
        try:
            samples = await asyncio.to_thread(sampler.measure)
        except Exception:  # measuring must never break a run
            logger.debug("sampling run %d failed", ex.run_id, exc_info=True)
            return
        finally:
            ex.between_samples.set()
        if samples and not ex.silenced and ex.lost is None:
            self._buffer.add_samples(ex.run_id, ex.attempt, samples)

    async def sample_loop(self) -> None:
        """Measures each run in progress every ``sample_interval`` seconds, counted from its start.

        Counting from each run's own start (rather than one clock for all) is what makes sure a run that
        lives longer than the interval is measured at least once, and so has totals to report.
        """
        interval = self.settings.sample_interval
        while True:
            now = time.monotonic()
            for ex in list(self.executions.values()):
                if ex.sampler is not None and ex.sample_due <= now:
                    ex.sample_due = now + interval
                    await self.sample(ex)
            # A run that starts while this sleeps is first due an interval after its start, so later.
            now = time.monotonic()
            due = [ex.sample_due for ex in self.executions.values() if ex.sampler is not None]
            await asyncio.sleep(max(0.0, min([*due, now + interval]) - now))

    # -- stopping -----------------------------------------------------------------------------------

    def abort(self, run_ids: Iterable[Any], source: str) -> None:
        """The server asked (via ``source``) to abort these runs; their outcome is reported as aborted."""
        wanted = {rid for rid in run_ids if isinstance(rid, int)}
        if not wanted:
            return
        for ex in self.executions.values():
            if ex.run_id in wanted and not ex.abort.is_set():
                ex.server_abort = True
                ex.abort.set()
                logger.info("aborting run %d (attempt %d): the server asked via %s", ex.run_id, ex.attempt, source)

    def lose(self, reason: str) -> int:
        """Kills every run whose outcome still counted, reporting nothing more of it; returns how many."""
        victims = [ex for ex in self.executions.values() if ex.lost is None]
        for ex in victims:
            ex.lost = reason
            ex.silenced = True
            ex.abort.set()
        return len(victims)

    def forget(self, reason: str) -> None:
        """The server no longer knows this worker: kill every run and drop everything not yet reported."""
        for ex in self.executions.values():
            ex.lost = ex.lost or reason
            ex.silenced = True
            ex.abort.set()
        self._buffer.clear()

    def reject(self, run_id: int, attempt: int, message: str) -> None:
        """The server refused this attempt's report: it no longer holds its run."""
        self._buffer.drop(run_id, attempt)
        ex = self.executions.get((run_id, attempt))
        if ex is None:
            logger.warning("the server refused the report of run %d (attempt %d): %s", run_id, attempt, message)
            return
        ex.silenced = True
        ex.lost = ex.lost or "the server refused its report"
        if not ex.abort.is_set():
            logger.warning("run %d (attempt %d) no longer holds its lease (%s); killing it", run_id, attempt, message)
            ex.abort.set()

    async def abort_remaining(self) -> None:
        """Kills what is still running at shutdown and waits (boundedly) for it to end."""
        if not self.executions:
            return
        executions = list(self.executions.values())
        logger.warning(
            "aborting %d run(s) still in progress: %s",
            len(executions),
            ", ".join(str(ex.run_id) for ex in executions),
        )
        for ex in executions:
            if ex.lost is None:
                # No outcome is reported: unregistering hands these runs back to the server, which
                # retries them instead of recording an abort nobody asked for.
                ex.lost = "the worker is shutting down"
                if not ex.silenced:
                    self._buffer.add_logs(
                        ex.run_id, ex.attempt, [system_line("worker shutting down: run aborted and handed back")]
                    )
            ex.abort.set()
        tasks = [ex.task for ex in executions if ex.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.kill_grace_seconds + _ABORT_WAIT_MARGIN_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", task.get_name(), exc_info=task.exception())
