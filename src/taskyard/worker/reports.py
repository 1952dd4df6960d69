"""Reporting runs back to the server: the shared buffer of logs and outcomes, and the flusher that sends it.

All runs report through one buffer, so one request carries many runs. Log lines and process-tree
samples go to the tracking endpoint (``POST /api/tracking/batch``), outcomes to the worker's report
endpoint, always in that order. The flusher sends the buffer in order, retries what the server could not
take, and adapts to what the server refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from taskyard.worker.executors import LogLine
from taskyard.worker.protocol import Backoff, Json, ServerApi, ServerError
from taskyard.worker.session import Session

logger = logging.getLogger("taskyard.worker")

# Report batching.
FLUSH_LINES = 500
FLUSH_DELAY_SECONDS = 0.1
OUTCOME_DELAY_SECONDS = 0.01
# How long an outcome with nothing else to send may wait for a poll to ride on while the worker's polls
# come back with runs (each such poll is followed by another at once, or cut off when a slot frees).
RIDE_DELAY_SECONDS = 0.25
BUFFER_MAX_LINES = 50_000
# Per request. The server accepts 10 MB bodies and 10,000 log lines and 10,000 samples per tracking
# request; lengths are counted in characters, so the byte budget leaves room for multi-byte text.
REQUEST_MAX_LINES = 5_000
REQUEST_MAX_SAMPLES = 5_000
REQUEST_MAX_CHARS = 2 * 1024 * 1024
REQUEST_MAX_RUNS = 1_000
# Process-tree samples kept per run while they wait; older ones are dropped beyond it.
MAX_SAMPLES = 1_000
_LINE_OVERHEAD = 128  # run id, attempt, keys, timestamp, level and stream around each message
_SAMPLE_SIZE = 160  # a whole sample, which has no free text

TRACKING_PATH = "/tracking/batch"

_FINAL_FLUSH_SECONDS = 10.0


def line_json(line: LogLine) -> Json:
    return {
        "timestamp": line.timestamp.isoformat(),
        "level": line.level,
        "stream": line.stream,
        "message": line.message,
    }


def system_line(message: str, level: str = "warn") -> Json:
    return line_json(LogLine(datetime.now(UTC), level, message, "system"))


def rejections(batch: Iterable[Pending], answer: Json) -> list[tuple[int, int, str]]:
    """(run id, attempt, why) of the outcomes of ``batch`` that a report's answer refused."""
    attempts = {part.run_id: part.attempt for part in batch}
    refused = []
    for item in answer.get("rejected") or []:
        if isinstance(item, dict) and isinstance(item.get("run_id"), int) and item["run_id"] in attempts:
            refused.append((item["run_id"], attempts[item["run_id"]], str(item.get("message") or item.get("code"))))
    return refused


# --------------------------------------------------------------------------------------------------
# The shared report buffer


@dataclass(eq=False)
class Pending:
    """What is waiting to be reported for one attempt of one run."""

    run_id: int
    attempt: int
    since: float
    logs: deque[Json] = field(default_factory=deque)
    final: Json | None = None
    final_at: float | None = None
    samples: deque[Json] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    @property
    def idle(self) -> bool:
        """Nothing left to send."""
        return not self.logs and not self.samples and self.final is None

    def to_json(self) -> Json:
        """The item of the report endpoint, where only parts that carry an outcome go."""
        assert self.final is not None
        return {"run_id": self.run_id, "attempt": self.attempt, **self.final}

    def tracking_logs(self) -> list[Json]:
        run_id = str(self.run_id)
        return [{"runId": run_id, "attempt": self.attempt, **line} for line in self.logs]

    def tracking_samples(self) -> list[Json]:
        run_id = str(self.run_id)
        return [{"runId": run_id, **sample, "source": "worker"} for sample in self.samples]

    def outcome_only(self) -> Pending | None:
        """This part without its logs and samples (once they are delivered); None without an outcome."""
        if self.final is None:
            return None
        part = Pending(self.run_id, self.attempt, self.since)
        part.final, part.final_at = self.final, self.final_at
        return part


class ReportBuffer:
    """Logs and outcomes of all runs, waiting for the flusher.

    Entries are kept in the order they first appeared, which is the order they are sent and, when the
    buffer overflows, the order log lines are dropped in. Outcomes are never dropped: they are small
    and losing one means a run is executed again.
    """

    def __init__(self, max_lines: int = BUFFER_MAX_LINES) -> None:
        self._entries: dict[tuple[int, int], Pending] = {}
        self._max_lines = max_lines
        self.lines = 0
        self._dropped = 0
        self.changed = asyncio.Event()
        self.urgent = False  # during the final flush everything is due at once
        self.in_flight: list[Pending] = []
        # Outcomes on their way inside a poll (the agent's), beside the flusher's request.
        self.riding: list[Pending] = []
        # Set by the agent while its polls claim runs: another poll follows soon, and outcomes ride on it.
        self.polls_busy = False

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

    def add_samples(self, run_id: int, attempt: int, samples: list[Json]) -> None:
        """Measurements of the run's process tree; they go out with the run's next log lines."""
        if not samples:
            return
        self._entry(run_id, attempt).samples.extend(samples)
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
        return [p.run_id for p in [*self._entries.values(), *self.in_flight, *self.riding] if p.final is not None]

    def due_at(self, now: float) -> float | None:
        if not self._entries:
            return None
        if self.urgent or self.lines >= FLUSH_LINES:
            return now
        outcome_alone = RIDE_DELAY_SECONDS if self.polls_busy else OUTCOME_DELAY_SECONDS
        due = now + FLUSH_DELAY_SECONDS
        for entry in self._entries.values():
            if entry.final_at is None:
                due = min(due, entry.since + FLUSH_DELAY_SECONDS)
            elif entry.logs or entry.samples:
                due = min(due, entry.since + FLUSH_DELAY_SECONDS, entry.final_at + OUTCOME_DELAY_SECONDS)
            else:
                due = min(due, entry.final_at + outcome_alone)
        return due

    def take(
        self, max_lines: int, max_chars: int, max_runs: int, max_samples: int = REQUEST_MAX_SAMPLES
    ) -> list[Pending]:
        """Removes one request's worth, oldest first.

        An outcome only comes along once every log line and sample of its run is in the same request;
        since the flusher delivers a request's logs before its outcomes, the server sees a run's logs no
        later than its outcome.
        """
        batch: list[Pending] = []
        lines_left, chars_left, samples_left = max_lines, max_chars, max_samples
        for key in list(self._entries):
            if len(batch) >= max_runs or lines_left <= 0 or chars_left <= 0:
                break
            entry = self._entries[key]
            part = Pending(entry.run_id, entry.attempt, entry.since)
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
            while entry.samples and samples_left > 0:
                if chars_left < _SAMPLE_SIZE and (batch or part.logs or part.samples):
                    break
                part.samples.append(entry.samples.popleft())
                samples_left -= 1
                chars_left -= _SAMPLE_SIZE
            if not entry.logs and not entry.samples and entry.final is not None:
                part.final, part.final_at = entry.final, entry.final_at
                entry.final = entry.final_at = None
            if entry.idle:
                del self._entries[key]
            if not part.idle:
                batch.append(part)
        return batch

    def take_outcomes(self, max_runs: int) -> list[Pending]:
        """Removes outcomes that may go out on their own, to ride on a poll: those of runs with no line or
        sample waiting here or in the flusher's request, so that the server still sees a run's logs no later
        than its outcome."""
        busy = {(part.run_id, part.attempt) for part in self.in_flight}
        batch: list[Pending] = []
        for key, entry in list(self._entries.items()):
            if len(batch) >= max_runs:
                break
            if entry.final is not None and not entry.logs and not entry.samples and key not in busy:
                del self._entries[key]
                batch.append(entry)
        self.riding = batch
        return batch

    def landed(self) -> None:
        """The outcomes riding on a poll reached the server."""
        self.riding = []

    def restore(self, batch: Iterable[Pending]) -> None:
        """Puts a batch that could not be delivered back in front of everything added since."""
        merged: dict[tuple[int, int], Pending] = {}
        for part in batch:
            key = (part.run_id, part.attempt)
            self.lines += len(part.logs)
            newer = self._entries.get(key)
            if newer is not None:
                part.logs.extend(newer.logs)
                part.samples.extend(newer.samples)
                if newer.final is not None:
                    part.final, part.final_at = newer.final, newer.final_at
            merged[key] = part
        for key, entry in self._entries.items():
            merged.setdefault(key, entry)
        self._entries = merged
        self._enforce_limit()
        self.changed.set()

    def _entry(self, run_id: int, attempt: int) -> Pending:
        key = (run_id, attempt)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Pending(run_id, attempt, time.monotonic())
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
            if entry.idle:
                del self._entries[key]
            if excess <= 0:
                break


# --------------------------------------------------------------------------------------------------
# The flusher


class ReportFlusher:
    """Sends the buffer to the server, oldest first, one request's worth at a time.

    Each request's worth goes out in two steps: its log lines and samples to the tracking endpoint, then
    its outcomes to the report endpoint, so the server never sees an outcome before the run's logs.

    ``reject`` is called for each attempt whose report the server refused: the run no longer holds its
    lease, so it has to be killed and its data dropped.
    """

    def __init__(
        self, buffer: ReportBuffer, api: ServerApi, session: Session, *, reject: Callable[[int, int, str], None]
    ) -> None:
        self._buffer = buffer
        self._api = api
        self._session = session
        self._reject = reject
        self._request_max_lines = REQUEST_MAX_LINES
        self._request_max_chars = REQUEST_MAX_CHARS
        self._request_max_samples = REQUEST_MAX_SAMPLES
        self._request_max_runs = REQUEST_MAX_RUNS

    async def loop(self) -> None:
        """Sends whatever is due, for as long as the worker runs."""
        backoff = Backoff()
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
            delivered, retry_after = await self.send()
            if delivered:
                backoff.reset()
            else:
                await asyncio.sleep(retry_after or backoff.next())

    async def send(self) -> tuple[bool, float | None]:
        """Sends one request's worth; (False, retry_after) when it has to be retried later."""
        buffer = self._buffer
        if not self._session.registered.is_set():
            return False, None
        batch = buffer.take(
            self._request_max_lines, self._request_max_chars, self._request_max_runs, self._request_max_samples
        )
        if not batch:
            return True, None
        generation, worker_id = self._session.generation, self._session.worker_id
        if any(part.logs or part.samples for part in batch):
            stop = await self._track(batch)
            if stop is not None:
                return stop
        # From here on only the outcomes may go back into the buffer: lines sent twice would be stored twice.
        outcomes = [part for part in (part.outcome_only() for part in batch) if part is not None]
        if outcomes:
            stop = await self._report(outcomes, worker_id, generation)
            if stop is not None:
                return stop
        dropped = buffer.take_dropped()
        if dropped:
            logger.warning("dropped %d log line(s) while reports could not be delivered", dropped)
        return True, None

    async def _track(self, batch: list[Pending]) -> tuple[bool, float | None] | None:
        """Delivers the batch's log lines and samples. None when its outcomes may follow (the lines are
        delivered, or refused for good); otherwise what :meth:`send` returns, with the batch restored."""
        buffer = self._buffer
        body: Json = {
            "events": [],
            "logs": [line for part in batch for line in part.tracking_logs()],
            "samples": [sample for part in batch for sample in part.tracking_samples()],
        }
        answer = await self._deliver(batch, "tracking", TRACKING_PATH, body, enveloped=False)
        if answer is None:
            return False, None
        if isinstance(answer, ServerError):
            if answer.status == 413 and self._shrink():
                buffer.restore(batch)
                return True, None
            if answer.status in (400, 404, 413, 422):
                # The same body can only fail the same way (404: a run the server does not know). The
                # outcomes still go: losing one means the run is executed again.
                logger.error(
                    "the server refused %d log line(s) and %d sample(s) of run(s) %s; dropping them: %s",
                    len(body["logs"]),
                    len(body["samples"]),
                    ", ".join(str(part.run_id) for part in batch),
                    answer,
                )
                return None
            buffer.restore(batch)
            self._api.refused("tracking", answer)
            return False, answer.retry_after
        return None

    async def _deliver(
        self, batch: list[Pending], what: str, path: str, body: Json, *, enveloped: bool = True
    ) -> Json | ServerError | None:
        """Posts ``body`` while ``batch`` is in flight: the answer, or the error the server answered with.
        None when the server could not be reached; the batch is then back in the buffer."""
        buffer = self._buffer
        buffer.in_flight = batch
        try:
            answer = await self._api.call("POST", path, body, enveloped=enveloped)
        except ServerError as exc:
            return exc
        except httpx.HTTPError as exc:
            buffer.restore(batch)
            self._api.unreachable(what, exc)
            return None
        except BaseException:
            buffer.restore(batch)
            raise
        finally:
            buffer.in_flight = []
        self._api.reachable()
        return answer

    async def _report(
        self, batch: list[Pending], worker_id: str | None, generation: int
    ) -> tuple[bool, float | None] | None:
        """Delivers the outcomes of ``batch`` (parts without logs or samples). None when they are done
        with, otherwise what :meth:`send` returns."""
        body: Json = {"reports": [part.to_json() for part in batch]}
        data = await self._deliver(batch, "report", f"/workers/{worker_id}/report", body)
        if data is None:
            return False, None
        if isinstance(data, ServerError):
            return await self._refused(batch, data, generation)
        for run_id, attempt, message in rejections(batch, data):
            self._reject(run_id, attempt, message)
        return None

    async def _refused(self, batch: list[Pending], exc: ServerError, generation: int) -> tuple[bool, float | None]:
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
                self._api.refused("report", exc)
                return False, exc.retry_after
            for part in batch:
                if part.run_id in refused:
                    self._reject(part.run_id, part.attempt, exc.message)
            buffer.restore([part for part in batch if part.run_id not in refused])
            return True, None
        if exc.status == 404:
            # The reports belong to a registration the server no longer has; they are stale.
            await self._session.reregister(generation)
            return True, None
        if exc.status == 413 and self._shrink():
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
        self._api.refused("report", exc)
        return False, exc.retry_after

    def _shrink(self) -> bool:
        """Halves what one request may carry; False when it already carries as little as it can."""
        if max(self._request_max_lines, self._request_max_samples, self._request_max_runs) <= 1:
            return False
        self._request_max_lines = max(1, self._request_max_lines // 2)
        self._request_max_chars = max(1, self._request_max_chars // 2)
        self._request_max_samples = max(1, self._request_max_samples // 2)
        self._request_max_runs = max(1, self._request_max_runs // 2)
        logger.warning(
            "request too large for the server; sending at most %d lines, %d samples and %d runs per request "
            "from now on",
            self._request_max_lines,
            self._request_max_samples,
            self._request_max_runs,
        )
        return True

    async def final_flush(self, flusher: asyncio.Task[None]) -> None:
        """Delivers what is left before the worker exits, within a deadline; ``flusher`` runs :meth:`loop`."""
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
                delivered, retry_after = await asyncio.wait_for(self.send(), remaining)
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
