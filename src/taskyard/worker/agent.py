"""The worker agent: registers with the server, long-polls for runs, executes them and reports back.

It speaks HTTP only. Four side tasks share the work and are supervised together, so that if one of
them dies unexpectedly the whole worker stops with an error instead of limping on half-alive:

* the poll loop keeps exactly one long-poll in flight, also when there is no free slot, because the
  poll answer is how aborts reach the worker within milliseconds;
* the heartbeat loop renews the leases of the runs the worker holds and reports machine load;
* the report flusher sends the logs and outcomes of all runs through one shared buffer, so one
  request carries many runs;
* the lease watch kills every run once the server has been silent for longer than the lease, since
  by then the server has handed those runs to another worker.

Each claimed run is an asyncio task around an executor from :mod:`taskyard.worker.execution`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from taskyard.settings import WorkerSettings
from taskyard.worker import system_info
from taskyard.worker.execution import (
    ExecutionResult,
    ExecutionSpec,
    LogLine,
    LogSink,
    Outcome,
    UnsupportedTaskTypeError,
    executor_for,
)

__all__ = ["WorkerAgent", "run_worker"]

logger = logging.getLogger("taskyard.worker")

Json = dict[str, Any]

# Report batching.
FLUSH_LINES = 500
FLUSH_DELAY_SECONDS = 0.1
OUTCOME_DELAY_SECONDS = 0.01
BUFFER_MAX_LINES = 50_000
# Per request. The server accepts 10 MB bodies and 10,000 lines per run; lengths are counted in
# characters, so the byte budget leaves room for multi-byte text.
REQUEST_MAX_LINES = 5_000
REQUEST_MAX_CHARS = 2 * 1024 * 1024
REQUEST_MAX_RUNS = 1_000
_LINE_OVERHEAD = 96  # keys, timestamp, level and stream around each message

BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0

_REQUEST_TIMEOUT_SECONDS = 30.0
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
_IP_DETECT_TIMEOUT_SECONDS = 2.0
_FINAL_FLUSH_SECONDS = 10.0
_UNREGISTER_TIMEOUT_SECONDS = 5.0
# On top of kill_grace_seconds: executors also drain pipes and reap the process after the kill.
_ABORT_WAIT_MARGIN_SECONDS = 10.0
_WARN_EVERY_SECONDS = 30.0
# Refusals that retrying cannot fix.
_FATAL_REGISTRATION = frozenset({400, 401, 403, 404, 422})


class _HttpError(Exception):
    """The server answered, but not with success."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Json | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after


class _RegistrationRefused(Exception):
    pass


class _Backoff:
    def __init__(self, first: float = BACKOFF_FIRST_SECONDS, cap: float = BACKOFF_MAX_SECONDS) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, delay * 2)
        return delay

    def reset(self) -> None:
        self._next = self._first


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# The shared report buffer


@dataclass(eq=False)
class _Pending:
    """What is waiting to be reported for one attempt of one run."""

    run_id: int
    attempt: int
    since: float
    logs: deque[Json] = field(default_factory=deque)
    final: Json | None = None
    final_at: float | None = None

    def to_json(self) -> Json:
        body: Json = {"run_id": self.run_id, "attempt": self.attempt, "logs": list(self.logs)}
        if self.final is not None:
            body.update(self.final)
        else:
            body["outcome"] = None
        return body


class _ReportBuffer:
    """Logs and outcomes of all runs, waiting for the flusher.

    Entries are kept in the order they first appeared, which is the order they are sent and, when the
    buffer overflows, the order log lines are dropped in. Outcomes are never dropped: they are small
    and losing one means a run is executed again.
    """

    def __init__(self, max_lines: int = BUFFER_MAX_LINES) -> None:
        self._entries: dict[tuple[int, int], _Pending] = {}
        self._max_lines = max_lines
        self.lines = 0
        self._dropped = 0
        self.changed = asyncio.Event()
        self.urgent = False  # during the final flush everything is due at once
        self.in_flight: list[_Pending] = []

    @property
    def empty(self) -> bool:
        return not self._entries

    @property
    def outcomes(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.final is not None)

    def add_logs(self, run_id: int, attempt: int, lines: list[Json]) -> None:
        if not lines:
            return
        self._entry(run_id, attempt).logs.extend(lines)
        self.lines += len(lines)
        self._enforce_limit()
        self.changed.set()

    def add_outcome(self, run_id: int, attempt: int, final: Json) -> None:
        entry = self._entry(run_id, attempt)
        entry.final = final
        entry.final_at = time.monotonic()
        self.changed.set()

    def drop(self, run_id: int, attempt: int) -> None:
        entry = self._entries.pop((run_id, attempt), None)
        if entry is not None:
            self.lines -= len(entry.logs)

    def clear(self) -> None:
        self._entries.clear()
        self.lines = 0

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def held_run_ids(self) -> list[int]:
        """Runs whose outcome has not been accepted yet; their leases still need renewing."""
        return [p.run_id for p in [*self._entries.values(), *self.in_flight] if p.final is not None]

    def due_at(self, now: float) -> float | None:
        if not self._entries:
            return None
        if self.urgent or self.lines >= FLUSH_LINES:
            return now
        due = min(entry.since for entry in self._entries.values()) + FLUSH_DELAY_SECONDS
        for entry in self._entries.values():
            if entry.final_at is not None:
                due = min(due, entry.final_at + OUTCOME_DELAY_SECONDS)
        return due

    def take(self, max_lines: int, max_chars: int, max_runs: int) -> list[_Pending]:
        """Removes one request's worth, oldest first.

        An outcome only comes along once every log line of its run is in the same request, which is
        what guarantees the server sees a run's logs no later than its outcome.
        """
        batch: list[_Pending] = []
        lines_left, chars_left = max_lines, max_chars
        for key in list(self._entries):
            if len(batch) >= max_runs or lines_left <= 0 or chars_left <= 0:
                break
            entry = self._entries[key]
            part = _Pending(entry.run_id, entry.attempt, entry.since)
            while entry.logs and lines_left > 0:
                size = len(entry.logs[0].get("message", "")) + _LINE_OVERHEAD
                if size > chars_left and (batch or part.logs):
                    # A single huge line still goes out on its own rather than blocking the buffer.
                    chars_left = 0
                    break
                part.logs.append(entry.logs.popleft())
                lines_left -= 1
                chars_left -= size
            self.lines -= len(part.logs)
            if not entry.logs and entry.final is not None:
                part.final, part.final_at = entry.final, entry.final_at
                entry.final = entry.final_at = None
            if not entry.logs and entry.final is None:
                del self._entries[key]
            if part.logs or part.final is not None:
                batch.append(part)
        return batch

    def restore(self, batch: Iterable[_Pending]) -> None:
        """Puts a batch that could not be delivered back in front of everything added since."""
        merged: dict[tuple[int, int], _Pending] = {}
        for part in batch:
            key = (part.run_id, part.attempt)
            self.lines += len(part.logs)
            newer = self._entries.get(key)
            if newer is not None:
                part.logs.extend(newer.logs)
                if newer.final is not None:
                    part.final, part.final_at = newer.final, newer.final_at
            merged[key] = part
        for key, entry in self._entries.items():
            merged.setdefault(key, entry)
        self._entries = merged
        self._enforce_limit()
        self.changed.set()

    def _entry(self, run_id: int, attempt: int) -> _Pending:
        key = (run_id, attempt)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Pending(run_id, attempt, time.monotonic())
        return entry

    def _enforce_limit(self) -> None:
        excess = self.lines - self._max_lines
        if excess <= 0:
            return
        if self._dropped == 0:
            logger.warning(
                "report buffer is full (%d log lines): dropping the oldest log lines until the server "
                "accepts reports again (outcomes are kept)",
                self._max_lines,
            )
        for key in list(self._entries):
            entry = self._entries[key]
            while entry.logs and excess > 0:
                entry.logs.popleft()
                excess -= 1
                self.lines -= 1
                self._dropped += 1
            if not entry.logs and entry.final is None:
                del self._entries[key]
            if excess <= 0:
                break


def _line_json(line: LogLine) -> Json:
    return {
        "timestamp": line.timestamp.isoformat(),
        "level": line.level,
        "stream": line.stream,
        "message": line.message,
    }


def _system_line(message: str, level: str = "warn") -> Json:
    return _line_json(LogLine(_utcnow(), level, message, "system"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------
# Runs in progress


@dataclass(eq=False)
class _Execution:
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


# --------------------------------------------------------------------------------------------------
# The agent


class WorkerAgent:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        client: httpx.AsyncClient | None = None,
        max_runs: int | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id: str | None = None
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(_REQUEST_TIMEOUT_SECONDS),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        self._max_runs = max_runs
        self._api = settings.server.rstrip("/") + "/api"
        self._headers = {"Content-Type": "application/json"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"
        self._poll_wait = min(settings.poll_wait, _MAX_POLL_WAIT_SECONDS)

        self._hostname = "localhost"
        self._ip_address = system_info.FALLBACK_IP
        self._lease_seconds = 15.0
        self._last_contact = time.monotonic()
        self._lease_lost = False
        self._server_status = "active"
        self._generation = 0  # bumped by every registration; tells stale 404s from fresh ones
        self._registered = asyncio.Event()
        self._register_lock = asyncio.Lock()

        self._executions: dict[tuple[int, int], _Execution] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._claimed = 0
        self._finished = 0
        self._idle = asyncio.Event()
        self._idle.set()

        self._buffer = _ReportBuffer()
        self._request_max_lines = REQUEST_MAX_LINES
        self._request_max_chars = REQUEST_MAX_CHARS

        self._stopping = asyncio.Event()
        self._immediate = asyncio.Event()
        # Set whenever something changes that may make the in-flight poll the wrong one.
        self._wake = asyncio.Event()
        self._closing = False
        self._started = False
        self._unreachable_since: float | None = None
        self._last_warned: dict[str, float] = {}

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
        self._wake.set()

    async def run(self) -> int:
        if self._started:
            raise RuntimeError("a WorkerAgent can only run once")
        self._started = True
        try:
            return await self._run()
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def _run(self) -> int:
        self._hostname = system_info.hostname()
        self._ip_address = await self._detect_ip()
        try:
            if not await self._register_first():
                return 0
        except _RegistrationRefused as exc:
            logger.error("%s", exc)
            return 1

        side = {
            "poll": asyncio.create_task(self._poll_loop(), name="taskyard-worker-poll"),
            "heartbeat": asyncio.create_task(self._heartbeat_loop(), name="taskyard-worker-heartbeat"),
            "report": asyncio.create_task(self._report_loop(), name="taskyard-worker-report"),
            "lease": asyncio.create_task(self._lease_loop(), name="taskyard-worker-lease"),
        }
        exit_code = 0
        try:
            crashed = await self._watch(side, self._stopping)
            if crashed is None:
                crashed = await self._drain(side)
            if crashed is not None:
                exit_code = 1
            await self._abort_remaining()
            self._closing = True
            side["poll"].cancel()
            await asyncio.gather(side["poll"], return_exceptions=True)
            # Heartbeats go on during the final flush: they keep the leases of runs whose outcomes
            # are still waiting to be delivered.
            await self._final_flush(side["report"])
            for name in ("heartbeat", "lease"):
                side[name].cancel()
            await asyncio.gather(side["heartbeat"], side["lease"], return_exceptions=True)
            await self._unregister()
        finally:
            self._closing = True
            leftovers = [*side.values(), *(ex.task for ex in self._executions.values() if ex.task)]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
        logger.info("worker %s stopped (%d run(s) finished)", self.worker_id, self._finished)
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
        if not self._executions:
            logger.info("stopping: no runs in progress")
            return None
        if self._immediate.is_set():
            logger.info("stopping now: aborting %d run(s)", len(self._executions))
            return None
        grace = self.settings.shutdown_grace_seconds
        logger.info("stopping: no new runs; waiting up to %gs for %d run(s) in progress", grace, len(self._executions))
        return await self._watch(side, self._idle, self._immediate, timeout=grace)

    async def _abort_remaining(self) -> None:
        if not self._executions:
            return
        executions = list(self._executions.values())
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
                        ex.run_id, ex.attempt, [_system_line("worker shutting down: run aborted and handed back")]
                    )
            ex.abort.set()
        tasks = [ex.task for ex in executions if ex.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.kill_grace_seconds + _ABORT_WAIT_MARGIN_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _final_flush(self, flusher: asyncio.Task[None]) -> None:
        buffer = self._buffer
        buffer.urgent = True
        buffer.changed.set()
        deadline = time.monotonic() + _FINAL_FLUSH_SECONDS
        while (not buffer.empty or buffer.in_flight) and (remaining := deadline - time.monotonic()) > 0:
            if not flusher.done():
                await asyncio.sleep(0.01)
                continue
            # The flusher died: deliver what we can ourselves.
            try:
                delivered, retry_after = await asyncio.wait_for(self._send_reports(), remaining)
            except TimeoutError:
                break
            if not delivered:
                await asyncio.sleep(min(retry_after or 0.5, max(0.0, deadline - time.monotonic())))
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        if not buffer.empty:
            logger.error(
                "exiting with undelivered reports: %d outcome(s), %d log line(s)", buffer.outcomes, buffer.lines
            )

    async def _unregister(self) -> None:
        if self.worker_id is None or not self._registered.is_set():
            return
        try:
            await asyncio.wait_for(
                self._call("DELETE", f"/workers/{self.worker_id}", timeout=_UNREGISTER_TIMEOUT_SECONDS),
                _UNREGISTER_TIMEOUT_SECONDS,
            )
        except _HttpError as exc:
            if exc.status != 404:
                logger.warning("could not unregister worker %s: %s", self.worker_id, exc)
            return
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.warning(
                "could not unregister worker %s (%s); the server will requeue its runs when their leases lapse",
                self.worker_id,
                _describe(exc),
            )
            return
        logger.info("unregistered worker %s", self.worker_id)

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: Json | None = None, *, timeout: float = _REQUEST_TIMEOUT_SECONDS
    ) -> Json:
        response = await self._client.request(
            method,
            self._api + path,
            content=orjson.dumps(body) if body is not None else None,
            headers=self._headers,
            timeout=timeout,
        )
        status = response.status_code
        try:
            payload = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            payload = None
        if 200 <= status < 300:
            if not isinstance(payload, dict):
                raise _HttpError(status, "BAD_RESPONSE", "the server's answer is not a JSON object")
            data = payload.get("data")
            return data if isinstance(data, dict) else {}
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            error = {}
        details = error.get("details")
        raise _HttpError(
            status,
            str(error.get("code") or "HTTP_ERROR"),
            str(error.get("message") or response.reason_phrase or "request failed"),
            details if isinstance(details, dict) else None,
            _retry_after(response),
        )

    def _note_unreachable(self, what: str, exc: BaseException) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            logger.warning("cannot reach the server (%s: %s); retrying", what, _describe(exc))
        else:
            logger.debug("%s failed: %s", what, _describe(exc))

    def _note_reachable(self) -> None:
        if self._unreachable_since is not None:
            logger.info("the server is reachable again (after %.1fs)", time.monotonic() - self._unreachable_since)
            self._unreachable_since = None

    def _http_trouble(self, what: str, exc: _HttpError) -> None:
        key = f"{what}:{exc.status}"
        now = time.monotonic()
        if now - self._last_warned.get(key, -_WARN_EVERY_SECONDS) >= _WARN_EVERY_SECONDS:
            self._last_warned[key] = now
            logger.warning("%s refused by the server: %s; retrying", what, exc)
        else:
            logger.debug("%s refused by the server: %s", what, exc)

    # -- registration -------------------------------------------------------------------------------

    async def _detect_ip(self) -> str:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(system_info.outbound_ip, self.settings.server), _IP_DETECT_TIMEOUT_SECONDS
            )
        except TimeoutError:
            return system_info.FALLBACK_IP

    async def _register_first(self) -> bool:
        """Registers, retrying while the server is unreachable; False if stopped before that worked."""
        backoff = _Backoff()
        while not self._stopping.is_set():
            try:
                await self._register()
                return True
            except _HttpError as exc:
                if exc.status in _FATAL_REGISTRATION:
                    raise _RegistrationRefused(f"the server refused to register this worker: {exc}") from exc
                self._http_trouble("registration", exc)
                delay = exc.retry_after or backoff.next()
            except httpx.HTTPError as exc:
                self._note_unreachable("registration", exc)
                delay = backoff.next()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        return False

    async def _register(self) -> None:
        body: Json = {
            "hostname": self._hostname,
            "ip_address": self._ip_address,
            "port": 0,
            "task_types": self.settings.task_type_list,
            "max_concurrent_tasks": self.settings.concurrency,
            "metadata": system_info.worker_metadata(),
        }
        # Without a name, a re-registration keeps the id the server chose, so the worker stays one
        # row in the server's registry.
        wanted = self.settings.name or self.worker_id
        if wanted:
            body["id"] = wanted
        sent = time.monotonic()
        data = await self._call("POST", "/workers", body)
        worker_id = data.get("id")
        if not isinstance(worker_id, str) or not worker_id:
            raise _HttpError(201, "BAD_RESPONSE", "the registration answer has no worker id")
        self.worker_id = worker_id
        self._apply_answer(data)
        self._generation += 1
        self._last_contact = sent
        self._lease_lost = False
        self._note_reachable()
        self._registered.set()
        self._wake.set()
        logger.info(
            "registered as %s with %s (task types %s, concurrency %d, lease %gs)",
            worker_id,
            self.settings.server,
            ",".join(self.settings.task_type_list),
            self.settings.concurrency,
            self._lease_seconds,
        )

    async def _reregister(self, generation: int) -> None:
        """Called on a 404 for the worker: the server forgot it (database reset, deleted by an admin)."""
        async with self._register_lock:
            if generation != self._generation:
                return  # another loop already registered again
            logger.warning("the server no longer knows worker %s; registering again", self.worker_id)
            self._registered.clear()
            # Whatever this worker held was requeued or no longer exists.
            self._forget_runs("the server forgot this worker")
            backoff = _Backoff()
            while True:
                try:
                    await self._register()
                    return
                except _HttpError as exc:
                    if exc.status in _FATAL_REGISTRATION:
                        raise _RegistrationRefused(f"the server refused to register this worker again: {exc}") from exc
                    self._http_trouble("registration", exc)
                    delay = exc.retry_after or backoff.next()
                except httpx.HTTPError as exc:
                    self._note_unreachable("registration", exc)
                    delay = backoff.next()
                await asyncio.sleep(delay)

    def _forget_runs(self, reason: str) -> None:
        for ex in self._executions.values():
            ex.lost = ex.lost or reason
            ex.silenced = True
            ex.abort.set()
        self._buffer.clear()

    def _apply_answer(self, data: Json) -> None:
        lease = data.get("lease_seconds")
        if isinstance(lease, int | float) and lease > 0:
            self._lease_seconds = float(lease)
        status = data.get("status")
        if isinstance(status, str) and status != self._server_status:
            previous, self._server_status = self._server_status, status
            if status == "active":
                logger.info("the server set worker %s back to active: claiming runs again", self.worker_id)
            elif previous == "active":
                logger.warning(
                    "the server marks worker %s %s: finishing current runs, claiming no new ones",
                    self.worker_id,
                    status,
                )
            self._wake.set()

    def _contact(self, at: float) -> None:
        self._last_contact = max(self._last_contact, at)
        self._note_reachable()
        if self._lease_lost and time.monotonic() - self._last_contact < self._lease_seconds:
            self._lease_lost = False
            logger.info("back in contact with the server: claiming runs again")
            self._wake.set()

    # -- polling ------------------------------------------------------------------------------------

    def _claim_capacity(self) -> int:
        if (
            self._stopping.is_set()
            or self._lease_lost
            or self._server_status != "active"
            or not self._registered.is_set()
        ):
            return 0
        free = self.settings.concurrency - len(self._executions)
        if self._max_runs is not None:
            free = min(free, self._max_runs - self._claimed)
        return max(0, min(free, _MAX_CAPACITY))

    def _live_run_ids(self) -> list[int]:
        # Runs already being killed are left out: listing them would make the server answer every
        # poll at once with the same abort until the process is gone.
        return [ex.run_id for ex in self._executions.values() if not ex.abort.is_set()]

    async def _poll_loop(self) -> None:
        backoff = _Backoff()
        while True:
            await self._registered.wait()
            generation, worker_id = self._generation, self.worker_id
            capacity = self._claim_capacity()
            body = {"capacity": capacity, "running": self._live_run_ids(), "wait": self._poll_wait}
            self._wake.clear()
            sent = time.monotonic()
            request = asyncio.create_task(
                self._call(
                    "POST",
                    f"/workers/{worker_id}/poll",
                    body,
                    timeout=self._poll_wait + _POLL_TIMEOUT_MARGIN_SECONDS,
                )
            )
            try:
                answer = await self._await_poll(request, capacity)
            except _HttpError as exc:
                if exc.status == 404:
                    await self._reregister(generation)
                else:
                    self._http_trouble("poll", exc)
                    await asyncio.sleep(exc.retry_after or backoff.next())
                continue
            except httpx.HTTPError as exc:
                self._note_unreachable("poll", exc)
                await asyncio.sleep(backoff.next())
                continue
            if answer is None:
                continue  # superseded by a poll with a different capacity
            backoff.reset()
            runs = answer.get("runs") or []
            # Runs claimed in this answer got fresh leases just now, whatever the send time was.
            self._contact(time.monotonic() if runs else sent)
            self._apply_answer(answer)
            aborts = answer.get("abort_runs") or []
            self._abort_runs(aborts, "poll")
            for run in runs:
                self._start_run(run)
            if self._server_status != "active" and not self._closing:
                await self._pause_unless_woken(_IDLE_POLL_PAUSE_SECONDS)
            elif not runs and not aborts and time.monotonic() - sent < _QUICK_POLL_SECONDS:
                await self._pause_unless_woken(_QUICK_POLL_PAUSE_SECONDS)

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
        return now == 0 and (self._stopping.is_set() or self._lease_lost)

    async def _pause_unless_woken(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _abort_runs(self, run_ids: Iterable[Any], source: str) -> None:
        wanted = {rid for rid in run_ids if isinstance(rid, int)}
        if not wanted:
            return
        for ex in self._executions.values():
            if ex.run_id in wanted and not ex.abort.is_set():
                ex.server_abort = True
                ex.abort.set()
                logger.info("aborting run %d (attempt %d): the server asked via %s", ex.run_id, ex.attempt, source)

    # -- heartbeats and leases ------------------------------------------------------------------------

    def _heartbeat_interval(self) -> float:
        return max(0.05, min(self.settings.heartbeat_interval, self._lease_seconds / 3))

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._registered.wait()
            generation, worker_id = self._generation, self.worker_id
            stats = system_info.sample()
            held = list(dict.fromkeys([*self._live_run_ids(), *self._buffer.held_run_ids()]))
            body = {
                "current_task_count": len(self._executions),
                "load_average": stats.load_average,
                "memory_usage": stats.memory_usage,
                "cpu_usage": stats.cpu_usage,
                "current_tasks": held,
            }
            sent = time.monotonic()
            try:
                ack = await self._call(
                    "POST",
                    f"/workers/{worker_id}/heartbeat",
                    body,
                    # A hung heartbeat must not outlive the lease it is meant to renew.
                    timeout=max(1.0, min(10.0, self._lease_seconds / 3)),
                )
            except _HttpError as exc:
                if exc.status == 404:
                    await self._reregister(generation)
                    continue
                self._http_trouble("heartbeat", exc)
            except httpx.HTTPError as exc:
                self._note_unreachable("heartbeat", exc)
            else:
                self._contact(sent)
                self._apply_answer(ack)
                self._abort_runs(ack.get("abort_runs") or [], "heartbeat")
            await asyncio.sleep(self._heartbeat_interval())

    async def _lease_loop(self) -> None:
        while True:
            if self._registered.is_set():
                silent = time.monotonic() - self._last_contact
                if silent > self._lease_seconds:
                    self._lose_lease(silent)
            await asyncio.sleep(_LEASE_CHECK_SECONDS)

    def _lose_lease(self, silent: float) -> None:
        victims = [ex for ex in self._executions.values() if ex.lost is None]
        if not self._lease_lost:
            self._lease_lost = True
            logger.error(
                "no answer from the server for %.1fs (lease %gs): it has given our runs to other workers; "
                "killing %d run(s) and claiming nothing until it answers again",
                silent,
                self._lease_seconds,
                len(victims),
            )
            self._wake.set()
        for ex in victims:
            ex.lost = "the lease was lost"
            ex.silenced = True
            ex.abort.set()

    # -- runs ---------------------------------------------------------------------------------------

    def _start_run(self, run: Any) -> None:
        try:
            run_id = int(run["run_id"])
            attempt = int(run["attempt"])
        except (KeyError, TypeError, ValueError):
            logger.error("ignoring a malformed run in the poll answer: %r", run)
            return
        key = (run_id, attempt)
        if key in self._executions:
            logger.warning("the server handed out run %d attempt %d twice; ignoring the repeat", run_id, attempt)
            return
        ex = _Execution(run_id, attempt, str(run.get("task_name") or ""), str(run.get("task_type") or ""))
        self._claimed += 1
        self._executions[key] = ex
        self._idle.clear()
        ex.task = asyncio.create_task(self._execute(ex, run), name=f"taskyard-run-{run_id}")
        ex.task.add_done_callback(_log_task_failure)
        logger.info("claimed run %d (attempt %d) of %s [%s]", run_id, attempt, ex.task_name or "?", ex.task_type)

    def _build_spec(self, ex: _Execution, run: Json) -> ExecutionSpec:
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
            "TASKYARD_API_URL": self._api,
            "TASKYARD_PARAMS": json.dumps(parameters, default=str),
            "TASKYARD_ATTEMPT": str(ex.attempt),
        }
        if self.settings.api_key:
            env["TASKYARD_API_KEY"] = self.settings.api_key
        return ExecutionSpec(
            run_id=ex.run_id,
            task_type=ex.task_type,
            command=str(run.get("command") or ""),
            arguments=[str(arg) for arg in arguments],
            parameters=parameters,
            metadata=metadata,
            timeout_seconds=timeout,
            env=env,
        )

    def _sink_for(self, ex: _Execution) -> LogSink:
        async def sink(lines: list[LogLine]) -> None:
            if not ex.silenced:
                self._buffer.add_logs(ex.run_id, ex.attempt, [_line_json(line) for line in lines])

        return sink

    async def _execute(self, ex: _Execution, run: Json) -> None:
        try:
            try:
                spec = self._build_spec(ex, run)
                executor = executor_for(
                    ex.task_type,
                    kill_grace_seconds=self.settings.kill_grace_seconds,
                    allow_private_urls=self.settings.allow_private_urls,
                )
            except (UnsupportedTaskTypeError, ValueError, TypeError) as exc:
                message = f"cannot run on this worker: {exc}"
                if not ex.silenced:
                    self._buffer.add_logs(ex.run_id, ex.attempt, [_system_line(message, "error")])
                result = ExecutionResult(Outcome.FAILED, None, message, None)
            else:
                async with self._slots:
                    try:
                        result = await executor.run(spec, self._sink_for(ex), ex.abort)
                    except Exception as exc:
                        # Executors promise not to raise; if one does, the run fails, not the worker.
                        logger.exception("the %s executor crashed on run %d", ex.task_type, ex.run_id)
                        result = ExecutionResult(Outcome.FAILED, None, f"worker error: {_describe(exc)}", None)
            self._finish(ex, result)
        finally:
            self._executions.pop((ex.run_id, ex.attempt), None)
            self._finished += 1
            if not self._executions:
                self._idle.set()
            self._wake.set()
            if self._max_runs is not None and self._finished >= self._max_runs and not self._stopping.is_set():
                logger.info("finished %d run(s), the most this worker was asked to run; stopping", self._finished)
                self.stop()

    def _finish(self, ex: _Execution, result: ExecutionResult) -> None:
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

    # -- reports ------------------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        backoff = _Backoff()
        buffer = self._buffer
        while True:
            now = time.monotonic()
            due = buffer.due_at(now)
            if due is None or due > now:
                buffer.changed.clear()
                if due is None:
                    await buffer.changed.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(buffer.changed.wait(), due - now)
                continue
            delivered, retry_after = await self._send_reports()
            if delivered:
                backoff.reset()
            else:
                await asyncio.sleep(retry_after or backoff.next())

    async def _send_reports(self) -> tuple[bool, float | None]:
        """Sends one request's worth; (False, retry_after) when it has to be retried later."""
        buffer = self._buffer
        if not self._registered.is_set():
            return False, None
        batch = buffer.take(self._request_max_lines, self._request_max_chars, REQUEST_MAX_RUNS)
        if not batch:
            return True, None
        generation, worker_id = self._generation, self.worker_id
        buffer.in_flight = batch
        try:
            data = await self._call(
                "POST", f"/workers/{worker_id}/report", {"reports": [part.to_json() for part in batch]}
            )
        except _HttpError as exc:
            buffer.in_flight = []
            return await self._report_refused(batch, exc, generation)
        except httpx.HTTPError as exc:
            buffer.in_flight = []
            buffer.restore(batch)
            self._note_unreachable("report", exc)
            return False, None
        except BaseException:
            buffer.in_flight = []
            buffer.restore(batch)
            raise
        buffer.in_flight = []
        self._note_reachable()
        attempts = {part.run_id: part.attempt for part in batch}
        for item in data.get("rejected") or []:
            if isinstance(item, dict) and isinstance(item.get("run_id"), int) and item["run_id"] in attempts:
                self._reject(item["run_id"], attempts[item["run_id"]], str(item.get("message") or item.get("code")))
        dropped = buffer.take_dropped()
        if dropped:
            logger.warning("dropped %d log line(s) while reports could not be delivered", dropped)
        return True, None

    async def _report_refused(
        self, batch: list[_Pending], exc: _HttpError, generation: int
    ) -> tuple[bool, float | None]:
        buffer = self._buffer
        if exc.status == 409:
            stale = exc.details.get("run_id")
            if isinstance(stale, int):
                refused = {stale}
            elif len(batch) == 1:
                refused = {batch[0].run_id}
            else:
                refused = set()
            if not refused:
                buffer.restore(batch)
                self._http_trouble("report", exc)
                return False, exc.retry_after
            for part in batch:
                if part.run_id in refused:
                    self._reject(part.run_id, part.attempt, exc.message)
            buffer.restore([part for part in batch if part.run_id not in refused])
            return True, None
        if exc.status == 404:
            # The reports belong to a registration the server no longer has; they are stale.
            await self._reregister(generation)
            return True, None
        if exc.status == 413 and self._request_max_lines > 1:
            self._request_max_lines = max(1, self._request_max_lines // 2)
            self._request_max_chars = max(1, self._request_max_chars // 2)
            logger.warning(
                "report too large for the server; sending at most %d lines per request from now on",
                self._request_max_lines,
            )
            buffer.restore(batch)
            return True, None
        if exc.status in (400, 413, 422):
            # Sending the same body again can only fail the same way.
            logger.error(
                "the server refused a report of %d run(s) (%s); dropping it: %s",
                len(batch),
                ", ".join(str(part.run_id) for part in batch),
                exc,
            )
            return True, None
        buffer.restore(batch)
        self._http_trouble("report", exc)
        return False, exc.retry_after

    def _reject(self, run_id: int, attempt: int, message: str) -> None:
        self._buffer.drop(run_id, attempt)
        ex = self._executions.get((run_id, attempt))
        if ex is None:
            logger.warning("the server refused the report of run %d (attempt %d): %s", run_id, attempt, message)
            return
        ex.silenced = True
        ex.lost = ex.lost or "the server refused its report"
        if not ex.abort.is_set():
            logger.warning("run %d (attempt %d) no longer holds its lease (%s); killing it", run_id, attempt, message)
            ex.abort.set()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), 60.0)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", task.get_name(), exc_info=task.exception())


# --------------------------------------------------------------------------------------------------
# Entry point


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_worker(settings: WorkerSettings, *, max_runs: int | None = None) -> int:
    """Runs a worker until SIGTERM/SIGINT (a second signal stops it at once); returns the exit code."""
    agent = WorkerAgent(settings, max_runs=max_runs)

    def on_signal(sig: signal.Signals) -> None:
        if agent.stopping:
            logger.warning("received %s again: aborting runs and stopping now", sig.name)
        else:
            logger.info("received %s: finishing current runs, then stopping (send again to stop now)", sig.name)
        agent.stop()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(sig)
        try:
            return await agent.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())
