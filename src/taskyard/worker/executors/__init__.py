"""Executors: the code that actually runs one run on a worker.

This package knows nothing of the server. The worker turns a claimed run into an
:class:`ExecutionSpec`, hands it to the executor for the task type together with a log sink and an
abort event, and reports the :class:`ExecutionResult` back over HTTP.

- :mod:`.base`: the contract (spec, log line, outcome, result, the ``Executor`` protocol, limits).
- :mod:`.output`: reading process output into lines, clipping text, batching the log sink.
- :mod:`.process`: ``shell`` and ``python``, each run in its own process group.
- :mod:`.guardian`: the process that ends a dead worker's runs.
- :mod:`.http`: ``http``, one request to a URL that was checked first.
"""

from __future__ import annotations

from taskyard.worker.executors.base import (
    ExecutionResult,
    ExecutionSpec,
    Executor,
    LogLine,
    LogSink,
    Outcome,
    UnsupportedTaskTypeError,
)
from taskyard.worker.executors.guardian import Guardian
from taskyard.worker.executors.http import HttpExecutor
from taskyard.worker.executors.process import PythonExecutor, ShellExecutor

__all__ = [
    "PROCESS_TASK_TYPES",
    "SUPPORTED_TASK_TYPES",
    "ExecutionResult",
    "ExecutionSpec",
    "Executor",
    "Guardian",
    "HttpExecutor",
    "LogLine",
    "LogSink",
    "Outcome",
    "PythonExecutor",
    "ShellExecutor",
    "UnsupportedTaskTypeError",
    "executor_for",
]

SUPPORTED_TASK_TYPES: tuple[str, ...] = ("shell", "python", "http")
PROCESS_TASK_TYPES = frozenset({"shell", "python"})


def executor_for(
    task_type: str,
    *,
    kill_grace_seconds: float = 5.0,
    allow_private_urls: bool = False,
    guardian: Guardian | None = None,
) -> Executor:
    if task_type == "shell":
        return ShellExecutor(kill_grace_seconds=kill_grace_seconds, guardian=guardian)
    if task_type == "python":
        return PythonExecutor(kill_grace_seconds=kill_grace_seconds, guardian=guardian)
    if task_type == "http":
        return HttpExecutor(allow_private_urls=allow_private_urls)
    raise UnsupportedTaskTypeError(
        f"unsupported task type {task_type!r}; expected one of {', '.join(SUPPORTED_TASK_TYPES)}"
    )
