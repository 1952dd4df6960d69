"""Small factories shared by the storage + service contract tests (they all go through `core`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from taskyard.domain.models import Run, Task, Worker
from taskyard.services.core import Core
from taskyard.services.tasks import TaskSpec
from taskyard.services.workers import Registration, RunReport

MakeTask = Callable[..., Awaitable[Task]]
MakeWorker = Callable[..., Awaitable[Worker]]
Claim = Callable[..., Awaitable[list[Run]]]
Report = Callable[..., Awaitable[Any]]


@pytest.fixture
def make_task(core: Core) -> MakeTask:
    counter = iter(range(1, 1_000_000))

    async def make(name: str | None = None, **fields: Any) -> Task:
        spec = {"task_type": "shell", "command": "echo hi", "retry_count": 0, **fields}
        return await core.tasks.create(TaskSpec(name=name or f"task-{next(counter)}", **spec))

    return make


@pytest.fixture
def make_worker(core: Core) -> MakeWorker:
    counter = iter(range(1, 1_000_000))

    async def make(worker_id: str | None = None, *, task_types: list[str] | None = None,
                   max_concurrent_tasks: int = 100) -> Worker:
        n = next(counter)
        return await core.workers.register(Registration(
            hostname=f"host-{n}", ip_address="10.0.0.1", port=9000 + n, task_types=task_types or ["shell"],
            max_concurrent_tasks=max_concurrent_tasks, worker_id=worker_id or f"worker-{n}"))

    return make


@pytest.fixture
def claim(core: Core) -> Claim:
    async def take(worker_id: str, capacity: int = 1) -> list[Run]:
        result = await core.workers.poll(worker_id, capacity=capacity, running=[], wait=0)
        return result.runs

    return take


@pytest.fixture
def report(core: Core) -> Report:
    async def send(worker_id: str, run: Run, outcome: str | None, **extra: Any) -> Any:
        return await core.workers.report(worker_id, [RunReport(run_id=run.id, attempt=run.attempt,
                                                               outcome=outcome, **extra)])

    return send
