"""A run's life through the services: trigger, claim, report, retry with backoff, abort, history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from contract_kit import claim, make_task, make_worker, report

from taskyard.domain.errors import Conflict
from taskyard.domain.status import RunStatus, TriggerKind
from taskyard.services.core import Core
from taskyard.services.tracking_lines import TrackingLog
from taskyard.storage import runs as run_rows

LEASE = 10  # the `core` fixture's lease_seconds
BASE = 1.0  # the `core` fixture's retry_base_delay
JITTER = 0.2  # RetryPolicy's default


async def _history(core: Core, run_id: int) -> list[dict]:
    return (await core.runs.get(run_id)).history


async def _run(core: Core, run_id: int):
    return (await core.runs.get(run_id)).run


async def test_trigger_queues_a_run(core, clock) -> None:
    task = await make_task(core, priority="high", retry_count=2, timeout_seconds=60)
    triggered = await core.runs.trigger(task.id, parameters={"x": 1})
    run = triggered.run
    assert run.status is RunStatus.QUEUED
    assert run.trigger is TriggerKind.MANUAL
    assert run.attempt == 0 and run.retry_count == 0 and run.max_retries == 2
    assert run.parameters == {"x": 1} and run.timeout_seconds == 60
    assert run.queued_at == clock.now and run.available_at == clock.now
    assert run.worker_id is None and run.lease_expires_at is None
    history = await _history(core, run.id)
    assert [(h["status"], h["attempt"]) for h in history] == [("queued", 0)]


async def test_last_run_at_moves_at_most_once_a_second_under_a_burst(core, clock) -> None:
    task = await make_task(core)
    first = clock.now
    for _ in range(3):
        await core.runs.trigger(task.id)
        clock.advance(0.3)
    assert (await core.tasks.get(task.id)).task.last_run_at == first
    clock.advance(0.2)  # a second after the first run
    await core.runs.trigger(task.id)
    assert (await core.tasks.get(task.id)).task.last_run_at == clock.now


async def test_the_trigger_estimate_follows_the_newest_outcome(core, clock) -> None:
    task = await make_task(core)
    assert (await core.runs.trigger(task.id)).average_execution_time is None
    worker = await make_worker(core)
    [claimed] = await claim(core, worker.id)
    clock.advance(4)
    await report(core, worker.id, claimed, "completed")
    assert (await core.runs.trigger(task.id)).average_execution_time == 4.0


async def test_claim_then_complete(core, clock) -> None:
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    clock.advance(1)
    [claimed] = await claim(core, worker.id)
    assert claimed.id == run.id
    assert claimed.status is RunStatus.RUNNING
    assert claimed.attempt == 1
    assert claimed.worker_id == worker.id and claimed.worker_hostname == worker.hostname
    assert claimed.started_at == clock.now
    assert claimed.lease_expires_at == clock.now + timedelta(seconds=LEASE)

    clock.advance(2.5)
    result = await report(core, worker.id, claimed, "completed", result="ok", exit_code=0)
    assert result.accepted == [run.id] and result.rejected == []
    done = await _run(core, run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.execution_time == pytest.approx(2.5)
    assert done.completed_at == clock.now
    assert done.lease_expires_at is None
    assert done.result == "ok" and done.exit_code == 0 and done.error_message is None
    history = await _history(core, run.id)
    assert [(h["status"], h["attempt"]) for h in history] == [("queued", 0), ("running", 1), ("completed", 1)]
    assert history[1]["worker_id"] == worker.id
    assert (await core.tasks.get(task.id)).task.last_success_at == clock.now


async def test_failure_retries_with_backoff_then_fails(core, clock) -> None:
    task = await make_task(core, retry_count=2)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)

    for retries_done in range(2):
        [claimed] = await claim(core, worker.id)
        assert claimed.id == run.id
        assert claimed.attempt == retries_done + 1
        clock.advance(1)
        result = await report(core, worker.id, claimed, "failed", error_message=f"boom {retries_done}", exit_code=1)
        assert result.accepted == [run.id]
        again = await _run(core, run.id)
        assert again.status is RunStatus.QUEUED
        assert again.retry_count == retries_done + 1
        assert again.worker_id is None and again.lease_expires_at is None
        assert again.error_message == f"boom {retries_done}"
        delay = BASE * 2**retries_done
        wait = (again.available_at - clock.now).total_seconds()
        assert delay * (1 - JITTER) - 1e-6 <= wait <= delay * (1 + JITTER) + 1e-6
        # Not claimable during the backoff, claimable after it.
        clock.advance(wait / 2)
        assert await claim(core, worker.id) == []
        clock.advance(wait)

    [last] = await claim(core, worker.id)
    assert last.attempt == 3 and last.retry_count == 2
    clock.advance(1)
    await report(core, worker.id, last, "timed_out")
    final = await _run(core, run.id)
    assert final.status is RunStatus.FAILED
    assert final.retry_count == 2
    assert final.error_message == "timed_out"
    assert final.completed_at == clock.now

    history = await _history(core, run.id)
    assert [(h["status"], h["attempt"]) for h in history] == [
        ("queued", 0), ("running", 1), ("queued", 1), ("running", 2), ("queued", 2), ("running", 3),
        ("failed", 3)]
    assert all(h["reason"] for h in history if h["status"] in {"queued", "failed"})


async def test_failure_without_retries_fails_at_once(core) -> None:
    task = await make_task(core, retry_count=0)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    [claimed] = await claim(core, worker.id)
    await report(core, worker.id, claimed, "failed", error_message="bad")
    final = await _run(core, run.id)
    assert final.status is RunStatus.FAILED and final.retry_count == 0 and final.error_message == "bad"


async def test_logs_without_outcome_keep_it_running(core) -> None:
    task = await make_task(core)
    await core.runs.trigger(task.id)
    worker = await make_worker(core)
    [claimed] = await claim(core, worker.id)
    await core.tracking.record([], logs=[TrackingLog(str(claimed.id), "line 1", stream="stdout"),
                                         TrackingLog(str(claimed.id), "line 2", stream="stderr")])
    await report(core, worker.id, claimed, None)
    detail = await core.runs.get(claimed.id)
    assert detail.run.status is RunStatus.RUNNING
    assert [line["message"] for line in detail.logs] == ["line 1", "line 2"]
    assert detail.logs[1]["stream"] == "stderr" and detail.logs[0]["attempt"] == 1


async def test_abort_queued(core) -> None:
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    aborted = await core.runs.abort(run.id)
    assert aborted.status is RunStatus.ABORTED
    assert aborted.error_message == "aborted by request"
    assert [h["status"] for h in await _history(core, run.id)] == ["queued", "aborted"]


async def test_abort_pending(core) -> None:
    upstream = await make_task(core)
    downstream = await make_task(core, dependencies=[upstream.id])
    run = (await core.runs.trigger(downstream.id)).run
    assert run.status is RunStatus.PENDING
    aborted = await core.runs.abort(run.id)
    assert aborted.status is RunStatus.ABORTED
    assert (await core.runs.get(run.id)).waiting_on == []


async def test_abort_running_tells_the_worker(core, clock) -> None:
    task = await make_task(core, retry_count=3)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    [claimed] = await claim(core, worker.id)
    clock.advance(3)
    aborted = await core.runs.abort(run.id)
    assert aborted.status is RunStatus.ABORTED
    assert aborted.execution_time == pytest.approx(3)
    assert aborted.lease_expires_at is None
    # The worker learns on its next poll/heartbeat that it no longer holds the run.
    polled = await core.workers.poll(worker.id, capacity=1, running=[run.id], wait=0)
    assert polled.abort_runs == [run.id] and polled.runs == []
    # Its own attempt may still report how it ended, but nothing changes the final status.
    result = await report(core, worker.id, claimed, "failed")
    assert result.accepted == [run.id]
    final = await _run(core, run.id)
    assert final.status is RunStatus.ABORTED and final.retry_count == 0
    assert [h["status"] for h in await _history(core, run.id)] == ["queued", "running", "aborted"]


async def test_illegal_moves_raise_conflict(core) -> None:
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    [claimed] = await claim(core, worker.id)
    await report(core, worker.id, claimed, "completed")

    with pytest.raises(Conflict):
        await core.runs.abort(run.id)
    # Straight through the lifecycle: a final run cannot move at all.
    done = await _run(core, run.id)
    for target in RunStatus:
        lifecycle = core.lifecycle()
        with pytest.raises(Conflict):
            async with core.db.write() as conn:
                await lifecycle.move(conn, done, target, now=core.clock())
    # A queued run cannot complete without running.
    other = (await core.runs.trigger(task.id)).run
    with pytest.raises(Conflict):
        async with core.db.write() as conn:
            await core.lifecycle().move(conn, other, RunStatus.COMPLETED, now=core.clock())
    assert (await _run(core, other.id)).status is RunStatus.QUEUED
    # A late report on the completed run is refused as stale, not applied.
    late = await report(core, worker.id, claimed, "failed")
    assert late.accepted == [] and late.rejected[0]["run_id"] == run.id
    assert (await _run(core, run.id)).status is RunStatus.COMPLETED


async def test_guarded_move_loses_a_race(core) -> None:
    """A move based on a stale read does not overwrite what someone else did first."""
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    await core.runs.abort(run.id)
    async with core.db.write() as conn:
        moved = await core.lifecycle().move(conn, run, RunStatus.FAILED, now=core.clock())
        assert moved is None
        assert len(await run_rows.history(conn, run.id)) == 2
    assert (await _run(core, run.id)).status is RunStatus.ABORTED
