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


def _completed(run_id: int, attempt: int = 1) -> outcomes.Outcome:
    return outcomes.Outcome(run_id, attempt, RunStatus.COMPLETED, "ok", 0, None, None)


async def _finish(core, clock, worker_id, items):
    async with core.db.write() as conn:
        return await outcomes.finish_if_all_plain(conn, items, worker_id=worker_id, project_id=1, now=clock.now)


async def test_one_outcome_that_is_not_plain_leaves_the_whole_report_alone(core, clock) -> None:
    task = await make_task(core)
    retried = await make_task(core, retry_count=2)
    worker, other = await make_worker(core), await make_worker(core)
    kept, aborted = (await core.runs.trigger(task.id)).run, (await core.runs.trigger(task.id)).run
    retrying = (await core.runs.trigger(retried.id)).run
    await claim(core, worker.id, capacity=3)
    await core.runs.abort(aborted.id)
    failing = outcomes.Outcome(retrying.id, 1, RunStatus.FAILED, None, 1, "exit 1", "exit 1")
    for items, who in (([_completed(kept.id), _completed(aborted.id)], worker.id),  # moved already
                       ([_completed(kept.id), failing], worker.id),  # a retry follows
                       ([_completed(kept.id), _completed(kept.id + 1000)], worker.id),  # no such run
                       ([_completed(kept.id, attempt=2)], worker.id),  # another attempt
                       ([_completed(kept.id)], other.id)):  # another worker
        assert await _finish(core, clock, who, items) is None
    assert (await core.runs.get(kept.id)).run.status is RunStatus.RUNNING
    assert (await core.runs.get(retrying.id)).run.status is RunStatus.RUNNING
    aborted_detail = await core.runs.get(aborted.id)
    assert aborted_detail.run.status is RunStatus.ABORTED and aborted_detail.run.result is None
    assert [h["status"] for h in aborted_detail.history] == ["queued", "running", "aborted"]

    done = await _finish(core, clock, worker.id, [_completed(kept.id)])
    assert [r.id for r in done] == [kept.id]
    finished = await core.runs.get(kept.id)
    assert finished.run.status is RunStatus.COMPLETED and finished.run.result == "ok"
    assert [h["status"] for h in finished.history] == ["queued", "running", "completed"]


async def test_a_run_someone_waits_on_is_not_plain(core, clock) -> None:
    upstream = await make_task(core)
    downstream = await make_task(core, dependencies=[upstream.id])
    worker = await make_worker(core)
    waiting = (await core.runs.trigger(downstream.id)).run
    assert waiting.status is RunStatus.PENDING
    dependency = (await claim(core, worker.id))[0]
    assert dependency.task_id == upstream.id
    assert await _finish(core, clock, worker.id, [_completed(dependency.id)]) is None
    # Through the report, the run-by-run path releases the waiting run.
    await core.workers.report(worker.id, [RunReport(run_id=dependency.id, attempt=1, outcome="completed")])
    assert (await core.runs.get(waiting.id)).run.status is RunStatus.QUEUED
