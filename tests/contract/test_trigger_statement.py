"""PostgreSQL's one-statement trigger (storage/triggers.py) must make the very run the transaction path makes,
queued or handed to a waiting worker, and must insert nothing where the transaction path would refuse."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import timedelta

import pytest
from contract_kit import make_task, make_worker

from taskyard.domain.errors import Conflict, NotFound
from taskyard.domain.status import Priority, RunStatus, TriggerKind
from taskyard.services.lifecycle import lease_deadline
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage import triggers
from taskyard.storage.tasks import get_task

TYPES = ["http", "python", "shell"]
# Columns that differ between any two runs however they were made.
_OWN = {"id", "uuid"}


@pytest.fixture
def pg_core(core):
    if not core.db.is_postgres:
        pytest.skip("the one-statement trigger is PostgreSQL's")
    return core


async def _by_statement(core, task_id, clock, **options):
    options = {"project_id": None, "parameters": None, "priority": None, "timeout_seconds": None, "hand_to": None,
               "touch": False, **options}
    async with core.db.statement() as conn:
        return await triggers.trigger(conn, task_id, task_types=TYPES, now=clock.now, origin="test", **options)


async def _by_transaction(core, task_id, clock, *, worker=None, **options):
    lifecycle = core.lifecycle()
    async with core.db.write() as conn:
        task = await get_task(conn, task_id)
        run = await lifecycle.create(conn, task, now=clock.now, trigger=TriggerKind.MANUAL,
                                     reason="triggered", **options)
        if worker is not None:
            run = await run_rows.hand_over(conn, run.id, worker_id=worker.id, hostname=worker.hostname,
                                           now=clock.now, lease_until=lease_deadline(clock.now, 10))
    return run


async def _history(core, run_id):
    async with core.db.read() as conn:
        return [{k: v for k, v in h.items() if k not in {"id", "run_id"}} for h in await run_rows.history(conn, run_id)]


def _same(a, b) -> None:
    left = {k: v for k, v in asdict(a).items() if k not in _OWN}
    right = {k: v for k, v in asdict(b).items() if k not in _OWN}
    assert left == right


async def test_a_queued_run_is_the_transaction_path_s_run(pg_core, clock) -> None:
    task = await make_task(pg_core, retry_count=2, timeout_seconds=90, priority="high")
    made, returned_task = await _by_statement(pg_core, task.id, clock, parameters={"n": 1})
    reference = await _by_transaction(pg_core, task.id, clock, parameters={"n": 1})
    _same(made, reference)
    assert made.status is RunStatus.QUEUED and made.attempt == 0 and made.priority is Priority.HIGH
    assert await _history(pg_core, made.id) == await _history(pg_core, reference.id)
    assert returned_task.id == task.id and returned_task.command == task.command

    chosen, _ = await _by_statement(pg_core, task.id, clock, priority=Priority.LOW, timeout_seconds=5)
    reference = await _by_transaction(pg_core, task.id, clock, priority=Priority.LOW, timeout_seconds=5)
    _same(chosen, reference)


async def test_a_handed_run_is_the_claim_s_run(pg_core, clock) -> None:
    task = await make_task(pg_core)
    worker = await make_worker(pg_core)
    hand = triggers.HandTo(worker.id, worker.hostname, worker.project_id, ["shell"],
                           lease_deadline(clock.now, 10))
    made, _ = await _by_statement(pg_core, task.id, clock, hand_to=hand)
    reference = await _by_transaction(pg_core, task.id, clock, worker=worker)
    _same(made, reference)
    assert (made.status, made.attempt, made.worker_id) == (RunStatus.RUNNING, 1, worker.id)
    history = await _history(pg_core, made.id)
    assert history == await _history(pg_core, reference.id)
    assert [(h["status"], h["attempt"], h["worker_id"], h["reason"]) for h in history] == [
        ("queued", 0, None, "triggered"), ("running", 1, worker.id, None)]


async def test_a_poll_that_may_not_take_the_run_leaves_it_queued(pg_core, clock) -> None:
    task = await make_task(pg_core)
    worker = await make_worker(pg_core)
    lease = lease_deadline(clock.now, 10)
    wrong_type = triggers.HandTo(worker.id, worker.hostname, worker.project_id, ["http"], lease)
    wrong_project = triggers.HandTo(worker.id, worker.hostname, worker.project_id + 1, ["shell"], lease)
    for hand in (wrong_type, wrong_project):
        made, _ = await _by_statement(pg_core, task.id, clock, hand_to=hand)
        assert (made.status, made.worker_id) == (RunStatus.QUEUED, None)
    await pg_core.workers.update(worker.id, {"status": "draining"})
    made, _ = await _by_statement(pg_core, task.id, clock, hand_to=triggers.HandTo(
        worker.id, worker.hostname, worker.project_id, ["shell"], lease))
    assert (made.status, made.worker_id) == (RunStatus.QUEUED, None)


async def test_nothing_is_inserted_where_the_transaction_path_would_refuse(pg_core, clock) -> None:
    paused = await make_task(pg_core)
    await pg_core.tasks.pause(paused.id)
    upstream = await make_task(pg_core)
    downstream = await make_task(pg_core, dependencies=[upstream.id])
    deleted = await make_task(pg_core)
    await pg_core.tasks.delete(deleted.id)
    for task_id in (paused.id, downstream.id, deleted.id, 999_999):
        assert await _by_statement(pg_core, task_id, clock) is None
    assert await _by_statement(pg_core, upstream.id, clock, project_id=upstream.project_id + 1) is None
    async with pg_core.db.read() as conn:
        assert await run_rows.active_runs_of_task(conn, paused.id) == []
    # Through the service the general path then says what is wrong.
    with pytest.raises(Conflict):
        await pg_core.runs.trigger(paused.id)
    with pytest.raises(NotFound):
        await pg_core.runs.trigger(deleted.id)
    waiting = await pg_core.runs.trigger(downstream.id)
    assert waiting.run.status is RunStatus.PENDING


async def test_last_run_at_moves_at_most_once_a_second(pg_core, clock) -> None:
    task = await make_task(pg_core)
    await _by_statement(pg_core, task.id, clock, touch=True)
    async with pg_core.db.read() as conn:
        assert (await task_rows.get_task(conn, task.id)).last_run_at == clock.now
    first = clock.now
    clock.advance(0.5)
    await _by_statement(pg_core, task.id, clock, touch=True)
    async with pg_core.db.read() as conn:
        assert (await task_rows.get_task(conn, task.id)).last_run_at == first
    clock.advance(0.6)
    await _by_statement(pg_core, task.id, clock, touch=True)
    async with pg_core.db.read() as conn:
        assert (await task_rows.get_task(conn, task.id)).last_run_at == first + timedelta(seconds=1.1)


async def test_the_service_hands_a_repeat_trigger_to_a_waiting_poll_in_one_statement(pg_core, monkeypatch) -> None:
    made = []
    original = triggers.trigger

    async def spy(*args, **kwargs):
        result = await original(*args, **kwargs)
        made.append(result)
        return result

    monkeypatch.setattr(triggers, "trigger", spy)
    task = await make_task(pg_core)
    worker = await make_worker(pg_core)
    first = await pg_core.runs.trigger(task.id)  # nobody waits: one statement, queued
    assert first.run.status is RunStatus.QUEUED and made[-1][0].id == first.run.id
    assert [r.id for r in (await pg_core.workers.poll(worker.id, capacity=1, running=[], wait=0)).runs] == [
        first.run.id]

    polling = asyncio.create_task(pg_core.workers.poll(worker.id, capacity=2, running=[first.run.id], wait=5))
    for _ in range(500):
        if len(pg_core.dispatch):
            break
        await asyncio.sleep(0.01)
    triggered = await pg_core.runs.trigger(task.id)
    polled = await polling
    assert made[-1][0].id == triggered.run.id, "the repeat trigger was one statement"
    assert triggered.run.status is RunStatus.RUNNING and triggered.run.worker_id == worker.id
    assert [r.id for r in polled.runs] == [triggered.run.id]
    assert polled.commands[task.id].command == task.command


def test_the_statement_stays_short_enough_for_psycopg_to_cache_its_parsing() -> None:
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH
    from sqlalchemy.dialects import postgresql

    compiled = str(triggers._STATEMENT.compile(dialect=postgresql.psycopg.dialect()))
    assert len(compiled) <= MAX_CACHED_STATEMENT_LENGTH
