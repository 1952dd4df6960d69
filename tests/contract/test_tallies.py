"""Statistics and run totals read from the tallies are exact whenever they are read: before the leader has
tallied anything, after, while tallied runs finish, and with runs created since the last pass."""

from __future__ import annotations

from typing import Any

import pytest
from contract_kit import claim, make_task, make_worker, report
from sqlalchemy import delete, func, select, update

from conftest import FakeClock
from taskyard.services import tallies as tally_service
from taskyard.services.core import Core
from taskyard.services.scope import DEFAULT_SCOPE, UNSCOPED, Scope
from taskyard.services.tasks import TaskSpec
from taskyard.storage.paging import PageRequest
from taskyard.storage.tables import run_tallies, run_tally_marks, runs


async def _truth(core: Core, **where: Any) -> dict[str, tuple[int, float, int]]:
    """Per status, straight from every run: how many, their seconds, how many have seconds."""
    async with core.db.read() as conn:
        rows = await conn.execute(
            select(runs.c.status, func.count(), func.coalesce(func.sum(runs.c.execution_time), 0.0),
                   func.count(runs.c.execution_time))
            .where(*(runs.c[k] == v for k, v in where.items())).group_by(runs.c.status))
        return {s: (int(n), float(secs), int(t)) for s, n, secs, t in rows.all()}


async def _check(core: Core, task_ids: list[int], project: Scope) -> None:
    for task_id in task_ids:
        truth = await _truth(core, task_id=task_id)
        done = truth.get("completed", (0, 0.0, 0))
        assert (await core.tasks.get(task_id)).statistics == {
            "total_runs": sum(n for n, _, _ in truth.values()),
            "successful_runs": done[0],
            "failed_runs": truth.get("failed", (0, 0.0, 0))[0],
            "aborted_runs": truth.get("aborted", (0, 0.0, 0))[0],
            "average_execution_time": round(done[1] / done[2], 3) if done[2] else None,
            "last_execution_status": (await core.tasks.get(task_id)).statistics["last_execution_status"],
        }
        for status in (None, ["completed"], ["pending", "queued"], ["failed", "aborted"]):
            page = await core.runs.list_page(task_id=task_id, status=status, page=PageRequest(size=1))
            assert (page.total, page.exact) == (sum(truth.get(s, (0,))[0] for s in status or truth), True)
    for scope in (DEFAULT_SCOPE, project, UNSCOPED):
        truth = await _truth(core, **({} if scope.everything else {"project_id": scope.project_id}))
        counts = (await core.system.stats(scope=scope))["task_runs"]
        assert counts["total"] == sum(n for n, _, _ in truth.values())
        for status in ("running", "completed", "failed", "aborted"):
            assert counts[status] == truth.get(status, (0,))[0], (scope, status)
        assert counts["pending"] == truth.get("pending", (0,))[0] + truth.get("queued", (0,))[0]
        assert (await core.runs.list_page(page=PageRequest(size=1), scope=scope)).total == counts["total"]


async def _finish(core: Core, clock: FakeClock, worker_id: str, task_id: int, outcome: str, seconds: float) -> None:
    await core.runs.trigger(task_id)
    [run] = await claim(core, worker_id)
    clock.advance(seconds)
    assert (await report(core, worker_id, run, outcome)).accepted == [run.id]


async def test_statistics_stay_exact_while_runs_are_tallied(core: Core, clock: FakeClock) -> None:
    one, two = await make_task(core, "one"), await make_task(core, "two")
    worker = await make_worker(core)
    for outcome, seconds in (("completed", 1.0), ("completed", 2.5), ("failed", 5.0), ("completed", 3.0)):
        await _finish(core, clock, worker.id, one.id, outcome, seconds)
    await _finish(core, clock, worker.id, two.id, "completed", 4.0)
    await core.runs.abort((await core.runs.trigger(one.id)).run.id)  # aborted before it ran: no seconds
    await core.runs.trigger(two.id)  # stays queued
    await core.runs.trigger(one.id)
    [running] = await claim(core, worker.id)
    tenant = await core.tenancy.create_tenant("elsewhere")
    project = Scope((await core.tenancy.create_project(tenant.uuid, "p")).id)
    three = await core.tasks.create(TaskSpec(name="three", task_type="shell", command="true"), scope=project)
    await core.runs.trigger(three.id, scope=project)
    await core.runs.abort((await core.runs.trigger(three.id, scope=project)).run.id, scope=project)
    tasks = [one.id, two.id, three.id]

    await _check(core, tasks, project)  # nothing tallied yet: every run is read as it is
    clock.advance(120)
    assert await core.tallies.advance() == 10
    await _check(core, tasks, project)

    clock.advance(2)  # a tallied run that was still running finishes; new runs arrive after the mark
    assert (await report(core, worker.id, running, "completed")).accepted == [running.id]
    await _finish(core, clock, worker.id, two.id, "failed", 1.5)
    await core.runs.trigger(one.id)
    await _check(core, tasks, project)
    assert await core.tallies.advance() == 0  # the new runs are younger than the margin: left for later
    await _check(core, tasks, project)
    clock.advance(120)
    assert await core.tallies.advance() == 2
    assert await core.tallies.advance() == 0
    await _check(core, tasks, project)


async def test_a_long_history_is_tallied_in_pieces(core: Core, clock: FakeClock,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally_service, "CHUNK", 3)
    task = await make_task(core)
    worker = await make_worker(core)
    for k in range(8):
        await _finish(core, clock, worker.id, task.id, "completed" if k % 3 else "failed", float(k))
    clock.advance(120)
    assert await core.tallies.advance(max_chunks=2) == 6  # a pass may stop early; the next one goes on
    await _check(core, [task.id], DEFAULT_SCOPE)
    assert await core.tallies.advance() == 2
    await _check(core, [task.id], DEFAULT_SCOPE)


async def test_a_mark_that_went_back_is_noticed(core: Core, clock: FakeClock) -> None:
    """A database restored to before its tallies under a running server: counts stay exact."""
    task = await make_task(core)
    worker = await make_worker(core)
    for k in range(3):
        await _finish(core, clock, worker.id, task.id, "completed", float(k))
    clock.advance(120)
    assert await core.tallies.advance() == 3
    await _check(core, [task.id], DEFAULT_SCOPE)  # this server has now seen the mark at the third run
    async with core.db.write() as conn:
        await conn.execute(delete(run_tallies))
        await conn.execute(update(run_tally_marks).values(through_id=0))
    await _check(core, [task.id], DEFAULT_SCOPE)
