"""A run never starts before each dependency has succeeded since this task's previous success."""

from __future__ import annotations

import pytest
from contract_kit import claim, make_task, make_worker, report

from taskyard.domain.errors import ValidationFailed
from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus, TriggerKind
from taskyard.services.core import Core
from taskyard.storage.paging import PageRequest


async def _runs_of(core: Core, task_id: int) -> list[Run]:
    runs, _ = await core.runs.list(task_id=task_id, page=PageRequest(size=500, sort="id", order="asc"))
    return runs


async def _run(core: Core, run_id: int) -> Run:
    return (await core.runs.get(run_id)).run


@pytest.fixture
async def chain(core):
    """A -> B -> C: C depends on B, B depends on A (retry_count 0 so failures are final)."""
    a = await make_task(core, "A")
    b = await make_task(core, "B", dependencies=["A"])
    c = await make_task(core, "C", dependencies=[b.id])
    return a, b, c


async def _work_through(core, clock, worker_id, expected_task_ids, outcome="completed"):
    """Claim one run at a time and finish it; check they come in `expected_task_ids` order."""
    done = []
    for task_id in expected_task_ids:
        clock.advance(1)
        [run] = await claim(core, worker_id, capacity=10)
        assert run.task_id == task_id, (run.task_name, done)
        assert await claim(core, worker_id, capacity=10) == []  # nothing else may start meanwhile
        clock.advance(1)
        await report(core, worker_id, run, outcome)
        done.append(run)
    return done


async def test_chain_runs_in_order(core, clock, chain) -> None:
    a, b, c = chain
    c_run = (await core.runs.trigger(c.id)).run
    assert c_run.status is RunStatus.PENDING
    [b_run] = await _runs_of(core, b.id)
    [a_run] = await _runs_of(core, a.id)
    assert b_run.status is RunStatus.PENDING and b_run.trigger is TriggerKind.DEPENDENCY
    assert a_run.status is RunStatus.QUEUED and a_run.trigger is TriggerKind.DEPENDENCY
    assert (await core.runs.get(c_run.id)).waiting_on == [b_run.id]
    assert (await core.runs.get(b_run.id)).waiting_on == [a_run.id]

    worker = await make_worker(core)
    done = await _work_through(core, clock, worker.id, [a.id, b.id, c.id])
    assert [r.id for r in done] == [a_run.id, b_run.id, c_run.id]
    for run_id in (a_run.id, b_run.id, c_run.id):
        assert (await _run(core, run_id)).status is RunStatus.COMPLETED
    # b and c became queued only once their dependency had completed.
    b_history = (await core.runs.get(b_run.id)).history
    assert [h["status"] for h in b_history] == ["pending", "queued", "running", "completed"]
    assert "'A'" in b_history[1]["reason"]


async def test_no_dependency_run_when_fresh(core, clock, chain) -> None:
    a, b, c = chain
    worker = await make_worker(core)
    await core.runs.trigger(c.id)
    await _work_through(core, clock, worker.id, [a.id, b.id, c.id])
    # B runs again (needing a fresh A, whose last success precedes B's) and succeeds after C's last
    # success: the next run of C may start at once, without new runs of A or B.
    await core.runs.trigger(b.id)
    await _work_through(core, clock, worker.id, [a.id, b.id])
    c_run = (await core.runs.trigger(c.id)).run
    assert c_run.status is RunStatus.QUEUED
    assert len(await _runs_of(core, b.id)) == 2
    assert len(await _runs_of(core, a.id)) == 2


async def test_stale_dependency_is_retriggered_once(core, clock, chain) -> None:
    a, b, c = chain
    worker = await make_worker(core)
    await core.runs.trigger(c.id)
    await _work_through(core, clock, worker.id, [a.id, b.id, c.id])
    # C succeeded after B: B is stale for C's next run, so B (and, likewise, A) runs again, once,
    # however many runs of C ask for it.
    clock.advance(1)
    first = (await core.runs.trigger(c.id)).run
    second = (await core.runs.trigger(c.id)).run
    assert first.status is RunStatus.PENDING and second.status is RunStatus.PENDING
    b_runs = await _runs_of(core, b.id)
    a_runs = await _runs_of(core, a.id)
    assert len(b_runs) == 2 and len(a_runs) == 2
    new_b = b_runs[-1]
    assert (await core.runs.get(first.id)).waiting_on == [new_b.id]
    assert (await core.runs.get(second.id)).waiting_on == [new_b.id]
    await _work_through(core, clock, worker.id, [a.id, b.id])
    clock.advance(1)
    both = await claim(core, worker.id, capacity=10)
    assert sorted(r.id for r in both) == [first.id, second.id]


async def test_shared_in_flight_dependency(core, clock) -> None:
    base = await make_task(core, "base")
    left = await make_task(core, "left", dependencies=["base"])
    right = await make_task(core, "right", dependencies=["base"])
    manual = (await core.runs.trigger(base.id)).run
    worker = await make_worker(core)
    [running] = await claim(core, worker.id)
    assert running.id == manual.id
    # An in-flight (here: running) run of the dependency is shared, not duplicated.
    l_run = (await core.runs.trigger(left.id)).run
    r_run = (await core.runs.trigger(right.id)).run
    assert len(await _runs_of(core, base.id)) == 1
    assert (await core.runs.get(l_run.id)).waiting_on == [manual.id]
    assert (await core.runs.get(r_run.id)).waiting_on == [manual.id]
    clock.advance(1)
    await report(core, worker.id, running, "completed")
    assert (await _run(core, l_run.id)).status is RunStatus.QUEUED
    assert (await _run(core, r_run.id)).status is RunStatus.QUEUED


async def test_multiple_dependencies_wait_for_all(core, clock) -> None:
    x = await make_task(core, "x")
    await make_task(core, "y", task_type="python")
    z = await make_task(core, "z", dependencies=["x", "y"])
    z_run = (await core.runs.trigger(z.id)).run
    shell = await make_worker(core, task_types=["shell"])
    py = await make_worker(core, task_types=["python"])
    [x_run] = await claim(core, shell.id)
    assert x_run.task_id == x.id
    clock.advance(1)
    await report(core, shell.id, x_run, "completed")
    assert (await _run(core, z_run.id)).status is RunStatus.PENDING
    [y_run] = await claim(core, py.id)
    assert await claim(core, shell.id) == []
    clock.advance(1)
    await report(core, py.id, y_run, "completed")
    assert (await _run(core, z_run.id)).status is RunStatus.QUEUED


async def test_failure_propagates_naming_the_dependency(core, clock, chain) -> None:
    _a, b, c = chain
    c_run = (await core.runs.trigger(c.id)).run
    worker = await make_worker(core)
    [a_run] = await claim(core, worker.id)
    await report(core, worker.id, a_run, "failed", error_message="disk full")
    assert (await _run(core, a_run.id)).status is RunStatus.FAILED
    [b_run] = await _runs_of(core, b.id)
    b_failed = await _run(core, b_run.id)
    c_failed = await _run(core, c_run.id)
    assert b_failed.status is RunStatus.FAILED and c_failed.status is RunStatus.FAILED
    assert "dependency 'A'" in b_failed.error_message and "disk full" in b_failed.error_message
    assert "dependency 'B'" in c_failed.error_message
    assert "dependency 'B'" in (await core.runs.get(c_run.id)).history[-1]["reason"]
    assert await claim(core, worker.id, capacity=10) == []


async def test_retried_dependency_keeps_dependents_waiting(core, clock) -> None:
    await make_task(core, "up", retry_count=1)
    down = await make_task(core, "down", dependencies=["up"])
    d_run = (await core.runs.trigger(down.id)).run
    worker = await make_worker(core)
    [u1] = await claim(core, worker.id)
    await report(core, worker.id, u1, "failed")
    assert (await _run(core, d_run.id)).status is RunStatus.PENDING
    clock.advance(5)
    [u2] = await claim(core, worker.id)
    assert u2.id == u1.id and u2.attempt == 2
    clock.advance(1)
    await report(core, worker.id, u2, "completed")
    assert (await _run(core, d_run.id)).status is RunStatus.QUEUED


async def test_aborted_dependency_fails_dependents(core, chain) -> None:
    a, b, c = chain
    c_run = (await core.runs.trigger(c.id)).run
    [a_run] = await _runs_of(core, a.id)
    await core.runs.abort(a_run.id)
    c_failed = await _run(core, c_run.id)
    assert c_failed.status is RunStatus.FAILED and "dependency 'B'" in c_failed.error_message
    [b_run] = await _runs_of(core, b.id)
    assert "dependency 'A' aborted" in (await _run(core, b_run.id)).error_message


async def test_cycles_are_refused(core, chain) -> None:
    a, _b, c = chain
    with pytest.raises(ValidationFailed):
        await core.tasks.update(a.id, {"dependencies": [c.id]})
    with pytest.raises(ValidationFailed):
        await core.tasks.update(a.id, {"dependencies": [a.id]})
