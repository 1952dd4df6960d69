"""Small helpers shared by the storage + service contract tests (they all go through `core`).

A plain module, not a conftest.py: a second conftest module would shadow the root one for
`from conftest import ...`.
"""

from __future__ import annotations

import itertools
from typing import Any

from taskyard.domain.models import Run, Task, Worker
from taskyard.services.core import Core
from taskyard.services.tasks import TaskSpec
from taskyard.services.workers import Registration, ReportResult, RunReport

_numbers = itertools.count(1)


async def make_task(core: Core, name: str | None = None, **fields: Any) -> Task:
    """A shell task with no retries unless told otherwise."""
    spec = {"task_type": "shell", "command": "echo hi", "retry_count": 0, **fields}
    return await core.tasks.create(TaskSpec(name=name or f"task-{next(_numbers)}", **spec))


async def make_worker(core: Core, worker_id: str | None = None, *, task_types: list[str] | None = None,
                      max_concurrent_tasks: int = 100) -> Worker:
    n = next(_numbers)
    return await core.workers.register(Registration(
        hostname=f"host-{n}", ip_address="10.0.0.1", port=9000 + n % 1000, task_types=task_types or ["shell"],
        max_concurrent_tasks=max_concurrent_tasks, worker_id=worker_id or f"worker-{n}"))


async def claim(core: Core, worker_id: str, capacity: int = 1, running: list[int] | None = None) -> list[Run]:
    """One poll that does not wait; `running` is what the worker says it is executing."""
    return (await core.workers.poll(worker_id, capacity=capacity, running=running or [], wait=0)).runs


async def report(core: Core, worker_id: str, run: Run, outcome: str | None, **extra: Any) -> ReportResult:
    """Report on the attempt `run` was claimed as."""
    return await core.workers.report(worker_id, [RunReport(run_id=run.id, attempt=run.attempt, outcome=outcome,
                                                           **extra)])
