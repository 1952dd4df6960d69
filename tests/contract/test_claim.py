"""Claiming runs: order, filters, limits, and no run claimed twice under concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter

from contract_kit import claim, make_task, make_worker, report

from taskyard.domain.status import RunStatus, WorkerStatus
from taskyard.services.core import Core
from taskyard.storage import runs as run_rows


async def test_priority_first_then_oldest(core, clock) -> None:
    low = await make_task(core, priority="low")
    normal = await make_task(core, priority="normal")
    critical = await make_task(core, priority="critical")
    expected = []
    order = [(low, None), (normal, None), (critical, None), (normal, "high"), (low, None), (critical, None)]
    for task, override in order:
        run = (await core.runs.trigger(task.id, priority=override)).run
        expected.append(run)
        clock.advance(1)
    rank = {"low": 0, "normal": 1, "high": 2, "critical": 3}
    expected.sort(key=lambda r: (-rank[r.priority.value], r.created_at, r.id))
    worker = await make_worker(core)
    got = []
    for _ in expected:
        [run] = await claim(core, worker.id)
        got.append(run.id)
    assert got == [r.id for r in expected]
    assert await claim(core, worker.id) == []


async def test_one_poll_returns_runs_in_claim_order(core) -> None:
    low = await make_task(core, priority="low")
    high = await make_task(core, priority="high")
    ids = [(await core.runs.trigger(t.id)).run.id for t in (low, high, low, high)]
    worker = await make_worker(core)
    runs = await claim(core, worker.id, capacity=10)
    assert [r.id for r in runs] == [ids[1], ids[3], ids[0], ids[2]]
    assert all(r.status is RunStatus.RUNNING and r.attempt == 1 for r in runs)


async def test_task_types_filter(core) -> None:
    shell = await make_task(core, task_type="shell")
    python = await make_task(core, task_type="python")
    shell_run = (await core.runs.trigger(shell.id)).run
    python_run = (await core.runs.trigger(python.id)).run
    py_worker = await make_worker(core, task_types=["python"])
    assert [r.id for r in await claim(core, py_worker.id, capacity=10)] == [python_run.id]
    assert await claim(core, py_worker.id, capacity=10) == []
    both = await make_worker(core, task_types=["http", "shell"])
    assert [r.id for r in await claim(core, both.id, capacity=10)] == [shell_run.id]


async def test_max_concurrent_tasks(core) -> None:
    task = await make_task(core)
    for _ in range(5):
        await core.runs.trigger(task.id)
    worker = await make_worker(core, max_concurrent_tasks=2)
    first = await claim(core, worker.id, capacity=10)
    assert len(first) == 2
    held = [r.id for r in first]
    # The worker's own list of what it executes is what counts: a run whose outcome report is still on
    # its way must not stall the next claim.
    assert await claim(core, worker.id, capacity=10, running=held) == []
    await report(core, worker.id, first[0], "completed")
    assert len(await claim(core, worker.id, capacity=10, running=held[1:])) == 1
    other = await make_worker(core, max_concurrent_tasks=10)
    assert len(await claim(core, other.id, capacity=10)) == 2


async def test_capacity(core) -> None:
    task = await make_task(core)
    for _ in range(5):
        await core.runs.trigger(task.id)
    worker = await make_worker(core, max_concurrent_tasks=100)
    assert await claim(core, worker.id, capacity=0) == []
    assert len(await claim(core, worker.id, capacity=3)) == 3
    assert len(await claim(core, worker.id, capacity=3)) == 2


async def test_draining_and_offline_workers_claim_nothing(core) -> None:
    task = await make_task(core)
    await core.runs.trigger(task.id)
    worker = await make_worker(core)
    await core.workers.update(worker.id, {"status": "draining"})
    result = await core.workers.poll(worker.id, capacity=5, running=[], wait=0)
    assert result.runs == [] and result.status is WorkerStatus.DRAINING
    await core.workers.update(worker.id, {"status": "active"})
    assert len(await claim(core, worker.id, capacity=5)) == 1


async def test_pending_runs_are_not_claimable(core) -> None:
    upstream = await make_task(core, task_type="python")
    downstream = await make_task(core, dependencies=[upstream.id])
    run = (await core.runs.trigger(downstream.id)).run
    assert run.status is RunStatus.PENDING
    worker = await make_worker(core, task_types=["shell"])
    assert await claim(core, worker.id, capacity=5) == []


RUNS = 200
POLLERS = 8


async def test_no_run_claimed_twice_under_concurrency(core: Core) -> None:
    task = await make_task(core)
    lifecycle = core.lifecycle()
    async with core.db.write() as conn:
        created = [await lifecycle.create(conn, task, now=core.clock(), trigger="manual") for _ in range(RUNS)]
    expected = {r.id for r in created if r is not None}
    assert len(expected) == RUNS
    workers = [await make_worker(core, max_concurrent_tasks=10_000) for _ in range(POLLERS)]

    async def poller(worker_id: str) -> list[int]:
        mine: list[int] = []
        while True:
            result = await core.workers.poll(worker_id, capacity=3, running=[], wait=0)
            if not result.runs:
                return mine
            mine.extend(r.id for r in result.runs)
            await asyncio.sleep(0)

    results = await asyncio.gather(*(poller(w.id) for w in workers))
    claimed = [run_id for batch in results for run_id in batch]
    counts = Counter(claimed)
    assert [run_id for run_id, n in counts.items() if n > 1] == []
    assert set(claimed) == expected

    async with core.db.read() as conn:
        runs = await run_rows.get_runs(conn, sorted(expected))
        for run in runs:
            assert run.status is RunStatus.RUNNING and run.attempt == 1
            history = await run_rows.history(conn, run.id)
            assert [h["status"] for h in history] == ["queued", "running"]
    owner = {run_id: w.id for w, batch in zip(workers, results, strict=True) for run_id in batch}
    assert all(run.worker_id == owner[run.id] for run in runs)


async def test_a_poll_marks_the_worker_seen_at_most_once_a_second(core, clock) -> None:
    worker = await make_worker(core)
    registered = clock.now
    clock.advance(0.5)
    await claim(core, worker.id)
    assert (await core.workers.get(worker.id)).worker.last_heartbeat == registered
    clock.advance(0.5)
    await claim(core, worker.id)
    assert (await core.workers.get(worker.id)).worker.last_heartbeat == clock.now
