"""A worker's report of many outcomes: the set-wise path (every run plainly final) must leave exactly what
applying the outcomes one by one leaves, and must refuse what moved under it."""

from __future__ import annotations

from dataclasses import asdict

from contract_kit import claim, make_task, make_worker

from taskyard.domain.status import RunStatus
from taskyard.services.workers import RunReport
from taskyard.storage import outcomes

# What the runs of each batch are told, in order; "retry" forces the one-by-one path for its whole batch.
OUTCOMES = [
    {"outcome": "completed", "result": '{"rows": 3}', "exit_code": 0},
    {"outcome": "failed", "error_message": "exit code 2", "exit_code": 2},
    {"outcome": "timed_out", "error_message": "timed out after 5s (process group killed)", "exit_code": -15},
    {"outcome": "aborted", "exit_code": -15},
    {"outcome": "completed", "result": None, "exit_code": 0},
]
# Columns that differ between any two runs however they were finished.
_OWN = {"id", "uuid", "task_id", "task_name", "worker_id", "worker_hostname"}


async def _finish_batch(core, clock, retrying: bool):
    final = await make_task(core, retry_count=0)
    task_of_retry = await make_task(core, retry_count=3)
    worker = await make_worker(core)
    runs = [(await core.runs.trigger(final.id)).run for _ in OUTCOMES]
    if retrying:
        runs.append((await core.runs.trigger(task_of_retry.id)).run)
    claimed = {r.id: r for r in await claim(core, worker.id, capacity=len(runs))}
    assert set(claimed) == {r.id for r in runs}
    clock.advance(2.5)
    reports = [RunReport(run_id=r.id, attempt=claimed[r.id].attempt, **told)
               for r, told in zip(runs[: len(OUTCOMES)], OUTCOMES, strict=True)]
    if retrying:
        reports.append(RunReport(run_id=runs[-1].id, attempt=1, outcome="failed", error_message="flaky"))
    result = await core.workers.report(worker.id, reports)
    assert sorted(result.accepted) == sorted(r.id for r in runs) and result.rejected == []
    details = [await core.runs.get(r.id) for r in runs[: len(OUTCOMES)]]
    return details, await core.tasks.get(final.id)


def _comparable(detail):
    run = {k: v for k, v in asdict(detail.run).items() if k not in _OWN}
    history = [{k: v for k, v in h.items() if k not in {"id", "run_id", "worker_id"}} for h in detail.history]
    return run, history


async def test_a_plain_report_leaves_what_one_by_one_leaves(core, clock) -> None:
    plain, plain_task = await _finish_batch(core, clock, retrying=False)
    one_by_one, one_by_one_task = await _finish_batch(core, clock, retrying=True)

    assert [d.run.status for d in plain] == [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.FAILED,
                                             RunStatus.ABORTED, RunStatus.COMPLETED]
    first = plain[0].run
    assert first.result == '{"rows": 3}' and first.exit_code == 0 and first.error_message is None
    assert first.execution_time == 2.5 and first.completed_at == first.updated_at
    assert first.lease_expires_at is None
    assert plain[3].run.error_message == "aborted"
    assert [h["status"] for h in plain[3].history] == ["queued", "running", "aborted"]
    assert plain[3].history[-1]["reason"] == "aborted on the worker"
    assert plain[1].history[-1]["reason"] == "exit code 2"
    assert plain[1].history[-1]["worker_id"] == plain[1].run.worker_id

    # Column for column (the clock moved between the batches, so times are compared as offsets).
    shift = one_by_one[0].run.created_at - plain[0].run.created_at
    for a, b in zip(plain, one_by_one, strict=True):
        run_a, history_a = _comparable(a)
        run_b, history_b = _comparable(b)
        for key, value in run_a.items():
            expected = run_b[key] - shift if hasattr(value, "tzinfo") and value is not None else run_b[key]
            assert value == expected, (key, value, run_b[key])
        assert [(h["status"], h["attempt"], h["reason"], h["at"]) for h in history_a] == [
            (h["status"], h["attempt"], h["reason"], h["at"] - shift) for h in history_b]
    assert plain_task.task.last_run_status == one_by_one_task.task.last_run_status == "completed"
    assert plain_task.task.last_success_at == one_by_one_task.task.last_success_at - shift


async def test_a_run_that_moved_under_the_report_is_not_finished(core, clock) -> None:
    task = await make_task(core)
    worker = await make_worker(core)
    kept, moved = (await core.runs.trigger(task.id)).run, (await core.runs.trigger(task.id)).run
    await claim(core, worker.id, capacity=2)
    await core.runs.abort(moved.id)  # between the report's read and its write, as far as the write knows
    finishes = [outcomes.Finish(r.id, 1, RunStatus.COMPLETED, "ok", 0, None, 1.0, None) for r in (kept, moved)]
    async with core.db.write() as conn:
        done = await outcomes.finish_runs(conn, finishes, worker_id=worker.id, now=clock.now)
    assert [r.id for r in done] == [kept.id]
    aborted = await core.runs.get(moved.id)
    assert aborted.run.status is RunStatus.ABORTED and aborted.run.result is None
    assert [h["status"] for h in aborted.history] == ["queued", "running", "aborted"]
    finished = await core.runs.get(kept.id)
    assert finished.run.status is RunStatus.COMPLETED and finished.run.result == "ok"
    assert [h["status"] for h in finished.history] == ["queued", "running", "completed"]


async def test_an_attempt_of_another_worker_is_not_finished(core, clock) -> None:
    task = await make_task(core)
    worker, other = await make_worker(core), await make_worker(core)
    run = (await core.runs.trigger(task.id)).run
    await claim(core, worker.id)
    async with core.db.write() as conn:
        done = await outcomes.finish_runs(conn, [outcomes.Finish(run.id, 1, RunStatus.COMPLETED, None, 0, None,
                                                                 None, None)], worker_id=other.id, now=clock.now)
    assert done == []
    assert (await core.runs.get(run.id)).run.status is RunStatus.RUNNING
