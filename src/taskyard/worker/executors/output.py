"""What executors write to the run's log: reading output into lines, clipping text, batching the sink."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from taskyard.worker.executors.base import (
    LOG_MESSAGE_LIMIT,
    RESULT_LIMIT,
    ExecutionResult,
    LogLine,
    LogSink,
    Outcome,
    logger,
)

BATCH_MAX_LINES = 200
BATCH_MAX_DELAY_SECONDS = 0.2

_READ_CHUNK = 64 * 1024
_TRUNCATED_MARK = "…[truncated]"


# --------------------------------------------------------------------------------------------------
# Text helpers


def clip_bytes(raw: bytes, limit: int) -> str:
    if len(raw) <= limit:
        return raw.decode("utf-8", "replace")
    # A non-final incremental decode drops a multi-byte character cut in half at the limit instead
    # of turning it into a replacement character.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw[:limit], final=False)


def clip_text(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "replace")
    return text if len(raw) <= limit else clip_bytes(raw, limit)


def _log_message(raw: bytes, truncated: bool) -> str:
    if not truncated and len(raw) <= LOG_MESSAGE_LIMIT:
        return raw.decode("utf-8", "replace")
    budget = LOG_MESSAGE_LIMIT - len(_TRUNCATED_MARK.encode())
    return clip_bytes(raw, budget) + _TRUNCATED_MARK


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def now() -> datetime:
    return datetime.now(UTC)


def system_line(message: str) -> LogLine:
    return LogLine(now(), "warn", clip_text(message, LOG_MESSAGE_LIMIT), "system")


# --------------------------------------------------------------------------------------------------
# Log batching


class LogBatcher:
    """Buffers log lines and hands them to the sink in order, in batches.

    A batch goes out when ``max_lines`` are buffered or ``max_delay`` after the first buffered
    line, whichever comes first. Sink failures are counted and logged but never propagate: losing
    some log lines is better than failing a run whose command succeeded.
    """

    def __init__(
        self,
        sink: LogSink,
        *,
        max_lines: int = BATCH_MAX_LINES,
        max_delay: float = BATCH_MAX_DELAY_SECONDS,
    ) -> None:
        self._sink = sink
        self._max_lines = max_lines
        self._max_delay = max_delay
        self._pending: list[LogLine] = []
        # One lock so timer-driven and size-driven flushes cannot reorder batches.
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tasks: set[asyncio.Task[None]] = set()
        self.sink_failures = 0
        self.in_flight = False
        # Bumped on every sign of life; the drain logic uses it to tell "slow" from "stuck".
        self.activity = 0

    def touch(self) -> None:
        self.activity += 1

    async def add(self, line: LogLine) -> None:
        self._pending.append(line)
        self.activity += 1
        if len(self._pending) >= self._max_lines:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._timer_tasks.add(task)
        task.add_done_callback(self._timer_tasks.discard)

    async def flush(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            while self._pending:
                batch = self._pending[: self._max_lines]
                del self._pending[: self._max_lines]
                await self._deliver(batch)

    async def _deliver(self, batch: list[LogLine]) -> None:
        self.in_flight = True
        try:
            await self._sink(batch)
        except Exception:
            self.sink_failures += 1
            if self.sink_failures == 1:
                logger.warning("log sink failed; continuing the run without those lines", exc_info=True)
        finally:
            self.in_flight = False
            self.activity += 1

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timer_tasks:
            await asyncio.gather(*self._timer_tasks, return_exceptions=True)
        await self.flush()
        if self.sink_failures:
            logger.warning("log sink failed %d time(s) during the run", self.sink_failures)

    def discard(self) -> None:
        """Drop everything without awaiting; used when the run itself is being cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._timer_tasks:
            task.cancel()
        self._pending.clear()


async def run_batched(
    sink: LogSink,
    abort: asyncio.Event,
    body: Callable[[LogBatcher], Awaitable[ExecutionResult]],
    *,
    not_started: str,
) -> ExecutionResult:
    """Runs ``body`` with a batcher in front of ``sink``, the frame every executor's ``run`` shares.

    An abort that arrived before anything was started ends the run at once ("aborted before
    ``not_started``"). Buffered lines are delivered when the run ends and dropped when it is cancelled.
    """
    batcher = LogBatcher(sink)
    try:
        if abort.is_set():
            await batcher.add(system_line(f"aborted before {not_started}"))
            result = ExecutionResult(Outcome.ABORTED, None, "aborted", None)
        else:
            result = await body(batcher)
    except BaseException:
        batcher.discard()
        raise
    await batcher.close()
    return result


# --------------------------------------------------------------------------------------------------
# Reading process output


class _LineSplitter:
    """Splits a byte stream into lines while keeping at most ``cap`` bytes of any one line.

    Reading fixed-size chunks instead of ``readline()`` means a single enormous line (minified JSON,
    a progress bar without newlines) costs bounded memory and never raises LimitOverrunError.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._buffer = bytearray()
        self._truncated = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._append(data[start:])
                return lines
            self._append(data[start:newline])
            lines.append(self._take())
            start = newline + 1

    def finish(self) -> tuple[bytes, bool] | None:
        if not self._buffer and not self._truncated:
            return None
        return self._take()

    def _append(self, piece: bytes) -> None:
        room = self._cap - len(self._buffer)
        if len(piece) > room:
            self._truncated = True
            piece = piece[: max(room, 0)]
        self._buffer += piece

    def _take(self) -> tuple[bytes, bool]:
        raw = bytes(self._buffer)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        truncated = self._truncated
        self._buffer.clear()
        self._truncated = False
        return raw, truncated


@dataclass
class StreamState:
    last_line: bytes | None = None


async def pump(
    reader: asyncio.StreamReader,
    *,
    stream: str,
    level: str,
    batcher: LogBatcher,
    state: StreamState,
) -> None:
    """Copies one output stream into the log, line by line; remembers its last non-blank line."""
    splitter = _LineSplitter(RESULT_LIMIT)

    async def emit(raw: bytes, truncated: bool) -> None:
        if raw.strip():
            state.last_line = raw
        await batcher.add(LogLine(now(), level, _log_message(raw, truncated), stream))

    while chunk := await reader.read(_READ_CHUNK):
        batcher.touch()
        for raw, truncated in splitter.feed(chunk):
            await emit(raw, truncated)
    tail = splitter.finish()
    if tail is not None:
        await emit(*tail)
