"""Leases: heartbeats renew them, the reaper recovers lapsed ones, stale attempts are refused."""

from __future__ import annotations

from datetime import timedelta

from contract_kit import claim, make_task, make_worker, report

from taskyard.domain.status import RunStatus, WorkerStatus
from taskyard.services.workers import Heartbeat, RunReport

LEASE = 10  # the `core` fixture's lease_seconds


async def _run(core, run_id):
    return (await core.runs.get(run_id)).run


async def _worker(core, worker_id):
    return (await core.workers.get(worker_id)).worker


async def test_heartbeat_renews_listed_leases(core, clock) -> None:
    task = await make_task(core, retry_count=1)
    first = (await core.runs.trigger(task.id)).run
    second = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    claimed = await claim(core, worker.id, capacity=2)
    assert {r.id for r in claimed} == {first.id, second.id}

    # Past the claim grace: only runs the worker lists are renewed.
    clock.advance(LEASE + 1)
    ack = await core.workers.heartbeat(worker.id, Heartbeat(current_tasks=[first.id], current_task_count=1))
    assert ack.abort_runs == [] and ack.worker.status is WorkerStatus.ACTIVE
    assert ack.worker.last_heartbeat == clock.now and ack.worker.current_task_count == 1
    renewed = await _run(core, first.id)
    assert renewed.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    unlisted = await _run(core, second.id)
    assert unlisted.lease_expires_at < clock.now

    assert await core.workers.reap() == 1  # the unlisted one lapsed
    assert (await _run(core, first.id)).status is RunStatus.RUNNING
    assert (await _run(core, second.id)).status is RunStatus.QUEUED
    # Keep heartbeating: the lease keeps moving and nothing is reaped.
    for _ in range(3):
        clock.advance(LEASE - 2)
        await core.workers.heartbeat(worker.id, Heartbeat(current_tasks=[first.id]))
        assert await core.workers.reap() == 0
    assert (await _run(core, first.id)).status is RunStatus.RUNNING
    assert (await _worker(core, worker.id)).status is WorkerStatus.ACTIVE


async def test_heartbeat_renews_fresh_claims_within_grace(core, clock) -> None:
    """A claim whose answer the worker may not have seen yet is renewed even if not listed."""
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    await claim(core, worker.id)
    clock.advance(LEASE / 2)
    await core.workers.heartbeat(worker.id, Heartbeat(current_tasks=[]))
    assert (await _run(core, run.id)).lease_expires_at == clock.now + timedelta(seconds=LEASE)


async def test_heartbeat_reports_runs_no_longer_held(core) -> None:
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    await claim(core, worker.id)
    await core.runs.abort(run.id)
    ack = await core.workers.heartbeat(worker.id, Heartbeat(current_tasks=[run.id, 99_999]))
    assert sorted(ack.abort_runs) == [run.id, 99_999]


async def test_reap_requeues_as_new_attempt(core, clock) -> None:
    task = await make_task(core, retry_count=1)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    [old] = await claim(core, worker.id)
    assert old.attempt == 1

    clock.advance(LEASE - 1)
    assert await core.workers.reap() == 0
    assert (await _run(core, run.id)).status is RunStatus.RUNNING

    clock.advance(2)  # past the lease, no heartbeat
    assert await core.workers.reap() == 1
    assert (await _worker(core, worker.id)).status is WorkerStatus.OFFLINE
    requeued = await _run(core, run.id)
    assert requeued.status is RunStatus.QUEUED
    assert requeued.retry_count == 1
    assert requeued.worker_id is None and requeued.lease_expires_at is None
    assert requeued.available_at == clock.now  # lost leases retry at once
    assert "lease lost" in (requeued.error_message or "")

    # The old attempt's report is stale now, whatever it says.
    stale = await report(core, worker.id, old, "completed")
    assert stale.accepted == []
    assert stale.rejected[0]["run_id"] == run.id and stale.rejected[0]["code"] == "RESOURCE_CONFLICT"
    assert (await _run(core, run.id)).status is RunStatus.QUEUED
    assert (await core.runs.get(run.id)).logs == []

    # A new attempt, even on the same worker once it is back, is attempt 2; attempt 1 stays stale.
    await core.workers.heartbeat(worker.id, Heartbeat())
    assert (await _worker(core, worker.id)).status is WorkerStatus.ACTIVE
    [new] = await claim(core, worker.id)
    assert new.id == run.id and new.attempt == 2
    stale = await report(core, worker.id, old, "failed")
    assert stale.accepted == [] and len(stale.rejected) == 1
    assert (await _run(core, run.id)).status is RunStatus.RUNNING
    ok = await report(core, worker.id, new, "completed")
    assert ok.accepted == [run.id]
    assert (await _run(core, run.id)).status is RunStatus.COMPLETED
    statuses = [(h["status"], h["attempt"]) for h in (await core.runs.get(run.id)).history]
    assert statuses == [("queued", 0), ("running", 1), ("queued", 1), ("running", 2), ("completed", 2)]


async def test_reap_fails_when_no_retries_left(core, clock) -> None:
    task = await make_task(core, retry_count=0)
    run = (await core.runs.trigger(task.id)).run
    worker = await make_worker(core)
    await claim(core, worker.id)
    clock.advance(LEASE + 1)
    assert await core.workers.reap() == 1
    failed = await _run(core, run.id)
    assert failed.status is RunStatus.FAILED
    assert failed.retry_count == 0
    assert "lease lost" in (failed.error_message or "")
    assert failed.completed_at == clock.now
    assert (await core.tasks.get(task.id)).task.last_run_status == "failed"


async def test_report_from_another_worker_is_stale(core) -> None:
    task = await make_task(core)
    run = (await core.runs.trigger(task.id)).run
    owner = await make_worker(core)
    intruder = await make_worker(core)
    [claimed] = await claim(core, owner.id)
    result = await core.workers.report(intruder.id, [RunReport(run_id=run.id, attempt=claimed.attempt,
                                                               outcome="completed")])
    assert result.accepted == [] and result.rejected[0]["code"] == "RESOURCE_CONFLICT"
    assert (await _run(core, run.id)).status is RunStatus.RUNNING


async def test_reregistering_requeues_held_runs(core) -> None:
    task = await make_task(core, retry_count=2)
    held = [(await core.runs.trigger(task.id)).run for _ in range(2)]
    worker = await make_worker(core, "agent-1")
    old = await claim(core, worker.id, capacity=2)
    assert len(old) == 2

    again = await make_worker(core, "agent-1")
    assert again.id == "agent-1" and again.status is WorkerStatus.ACTIVE
    for run in held:
        requeued = await _run(core, run.id)
        assert requeued.status is RunStatus.QUEUED
        assert requeued.retry_count == 1 and requeued.worker_id is None
        assert "re-registered" in (requeued.error_message or "")
    # The previous life's attempts are stale; the new life claims new attempts.
    stale = await report(core, "agent-1", old[0], "completed")
    assert stale.accepted == []
    new = await claim(core, "agent-1", capacity=2)
    assert sorted(r.attempt for r in new) == [2, 2]


async def test_reregistering_without_retries_fails_held_runs(core) -> None:
    task = await make_task(core, retry_count=0)
    run = (await core.runs.trigger(task.id)).run
    await make_worker(core, "agent-2")
    await claim(core, "agent-2")
    await make_worker(core, "agent-2")
    assert (await _run(core, run.id)).status is RunStatus.FAILED


async def test_a_stale_read_never_moves_a_newer_attempt(core, clock) -> None:
    """What a report or the reaper decided from attempt 1 must not land on attempt 2 (on PostgreSQL the
    run can be requeued and reclaimed between their read and their write)."""
    task = await make_task(core, retry_count=3)
    run = (await core.runs.trigger(task.id)).run
    first = await make_worker(core)
    [attempt_1] = await claim(core, first.id)
    clock.advance(LEASE + 1)
    await core.workers.reap()
    second = await make_worker(core)
    [attempt_2] = await claim(core, second.id)
    assert attempt_2.attempt == 2 and attempt_2.status is RunStatus.RUNNING

    for target in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.QUEUED):
        async with core.db.write() as conn:
            assert await core.lifecycle().move(conn, attempt_1, target, now=clock.now) is None
    async with core.db.write() as conn:
        assert await core.lifecycle().fail_attempt(conn, attempt_1, now=clock.now, error="late") is None
    current = await _run(core, run.id)
    assert current.status is RunStatus.RUNNING
    assert (current.attempt, current.worker_id, current.retry_count) == (2, second.id, 1)
