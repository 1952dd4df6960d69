"""What every executor promises: the run it is given, the log lines it emits and the result it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

LOG_MESSAGE_LIMIT = 8 * 1024
RESULT_LIMIT = 64 * 1024
ERROR_MESSAGE_LIMIT = 2 * 1024

# Every executor module logs under the name the executors had when they were one module, so log
# filters and greps keep working.
logger = logging.getLogger("taskyard.worker.execution")


@dataclass(frozen=True)
class ExecutionSpec:
    run_id: int
    task_type: str
    command: str
    arguments: list[str]
    parameters: dict[str, Any]
    metadata: dict[str, Any]
    timeout_seconds: float | None
    env: dict[str, str]
    workdir: str | None = None
    # Called with the pid of the run's process group leader once it has started (process executors
    # only); the worker measures the process tree from there. It must not block and must not raise.
    on_start: Callable[[int], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    message: str
    stream: str


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ABORTED = "aborted"


@dataclass(frozen=True)
class ExecutionResult:
    outcome: Outcome
    result: str | None
    error_message: str | None
    # For process runs: the leader's return code, negative when it died from a signal (the
    # subprocess convention). None when nothing was started and for HTTP runs.
    exit_code: int | None


LogSink = Callable[[list[LogLine]], Awaitable[None]]


class Executor(Protocol):
    async def run(self, spec: ExecutionSpec, sink: LogSink, abort: asyncio.Event) -> ExecutionResult: ...


class UnsupportedTaskTypeError(ValueError, KeyError):
    """Raised by :func:`executor_for`; both a ValueError and a KeyError so either kind of caller copes."""

    def __str__(self) -> str:
        # KeyError would otherwise repr() the message.
        return str(self.args[0]) if self.args else ""
