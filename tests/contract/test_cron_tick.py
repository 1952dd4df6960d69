"""Cron ticks: one run per slot, never twice, catch-up policies, pause/resume, seconds, DST; runs created
ahead of their slot, claimable at it, cancelled if the task changes before it; when the loop wakes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from contract_kit import claim, make_task, make_worker, report

from taskyard.domain.models import Run, Task, Worker
from taskyard.domain.status import RunStatus, TriggerKind
from taskyard.services import job_views
from taskyard.services.core import Core, CoreConfig
from taskyard.services.scheduling import LOOKAHEAD, plan_slots
from taskyard.storage import cron as cron_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage.database import Database
from taskyard.storage.paging import PageRequest
from taskyard.storage.wakeup import CHANNEL

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # the FakeClock's start
EVERY_5 = "*/5 * * * *"


async def _cron_runs(core: Core, task_id: int) -> list[Run]:
    runs, total = await core.runs.list(task_id=task_id, page=PageRequest(size=500, sort="id", order="asc"))
    assert total == len(runs)
    return runs


def _at(hour: int, minute: int, second: int = 0) -> datetime:
    return START.replace(hour=hour, minute=minute, second=second)


async def test_one_run_per_slot(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_5)
    assert task.next_run_at == _at(12, 5)
    assert await core.scheduling.tick() == 0
    fired_slots = []
    for _ in range(6):
        clock.advance(120)  # between slots: nothing
        assert await core.scheduling.tick() == 0
        clock.advance(180)  # on the slot
        assert await core.scheduling.tick() == 1
        fired_slots.append(clock.now)
    clock.advance(300 + 20)  # a tick 20 s late still fires the slot it is late for
    assert await core.scheduling.tick() == 1
    fired_slots.append(_at(12, 35))

    runs = await _cron_runs(core, task.id)
    assert [r.scheduled_for for r in runs] == fired_slots
    assert all(r.trigger is TriggerKind.CRON and r.status is RunStatus.QUEUED for r in runs)
    assert runs[-1].created_at == _at(12, 35, 20)
    detail = await core.tasks.get(task.id)
    assert detail.task.next_run_at == _at(12, 40)
    assert detail.task.last_run_at == _at(12, 35, 20)


async def test_same_time_twice_fires_once(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_5)
    clock.advance(300)
    assert await core.scheduling.tick() == 1
    assert await core.scheduling.tick() == 0
    # A scheduler with a stale view (next_run_at still at the fired slot) cannot fire it again:
    # the (task, scheduled_for) unique key refuses the second run.
    async with core.db.write() as conn:
        await task_rows.update_task(conn, task.id, {"next_run_at": _at(12, 5)})
    assert await core.scheduling.tick() == 0
    runs = await _cron_runs(core, task.id)
    assert [r.scheduled_for for r in runs] == [_at(12, 5)]
    assert (await core.tasks.get(task.id)).task.next_run_at == _at(12, 10)


async def test_two_schedulers_ticking_at_once_fire_once(core, clock, database_url) -> None:
    task = await make_task(core, schedule=EVERY_5)
    other_db = Database(database_url)
    other = Core(other_db, CoreConfig(lease_seconds=10), clock=clock)
    try:
        clock.advance(300)
        fired = await asyncio.gather(core.scheduling.tick(), other.scheduling.tick())
    finally:
        await other_db.dispose()
    assert sum(fired) == 1
    assert [r.scheduled_for for r in await _cron_runs(core, task.id)] == [_at(12, 5)]


@pytest.mark.parametrize(("policy", "expected"), [
    ("latest", [_at(13, 0)]),
    ("all", [_at(12, 5) + timedelta(minutes=5 * i) for i in range(12)]),
    ("none", [_at(13, 0)]),  # the newest slot is due right now: it is not a catch-up
])
async def test_downtime_catchup(core, clock, policy, expected) -> None:
    task = await make_task(core, schedule=EVERY_5, catchup=policy)
    assert await core.scheduling.tick() == 0
    clock.advance(3600)
    assert await core.scheduling.tick() == len(expected)
    assert [r.scheduled_for for r in await _cron_runs(core, task.id)] == expected
    assert (await core.tasks.get(task.id)).task.next_run_at == _at(13, 5)
    assert await core.scheduling.tick() == 0


@pytest.mark.parametrize(("policy", "expected"), [("latest", 1), ("all", 12), ("none", 0)])
async def test_downtime_ending_between_slots(core, clock, policy, expected) -> None:
    task = await make_task(core, schedule=EVERY_5, catchup=policy)
    clock.advance(3600 + 90)  # 13:01:30: the newest slot (13:00) is 90 s old, past the grace
    assert await core.scheduling.tick() == expected
    runs = await _cron_runs(core, task.id)
    assert len(runs) == expected
    if expected:
        assert runs[-1].scheduled_for == _at(13, 0)
    assert (await core.tasks.get(task.id)).task.next_run_at == _at(13, 5)


async def test_paused_never_fires_and_resume_plans_from_now(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_5, catchup="all")
    paused = await core.tasks.pause(task.id)
    assert paused.next_run_at is None
    for _ in range(12):
        clock.advance(300)
        assert await core.scheduling.tick() == 0
    clock.advance(120)  # 13:02
    resumed = await core.tasks.resume(task.id)
    assert resumed.next_run_at == _at(13, 5)
    assert await core.scheduling.tick() == 0  # missed slots are skipped, even with catchup "all"
    clock.advance(180)
    assert await core.scheduling.tick() == 1
    assert [r.scheduled_for for r in await _cron_runs(core, task.id)] == [_at(13, 5)]


async def test_pausing_after_due_does_not_fire(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_5)
    clock.advance(300)
    await core.tasks.pause(task.id)
    assert await core.scheduling.tick() == 0
    assert await _cron_runs(core, task.id) == []


async def test_six_field_seconds_schedule(core, clock) -> None:
    task = await make_task(core, schedule="* * * * * */15")  # seconds last: every 15 s
    assert task.next_run_at == _at(12, 0, 15)
    for _ in range(4):
        clock.advance(7)
        assert await core.scheduling.tick() == 0
        clock.advance(8)
        assert await core.scheduling.tick() == 1
    assert [r.scheduled_for for r in await _cron_runs(core, task.id)] == [
        _at(12, 0, 15), _at(12, 0, 30), _at(12, 0, 45), _at(12, 1, 0)]


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("day", "expected_utc"), [
    # spring forward: 02:30 does not exist; it fires when the gap ends, 03:00 CEST
    ((2026, 3, 29), [datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
                     datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]),
    # fall back: 02:30 happens twice; only the first (CEST) fires
    ((2026, 10, 25), [datetime(2026, 10, 24, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                      datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]),
])
async def test_daily_in_berlin_across_dst(core, clock, day, expected_utc) -> None:
    y, m, d = day
    clock.now = datetime(y, m, d, tzinfo=UTC) - timedelta(days=1, hours=1)
    task = await make_task(core, schedule="30 2 * * *", timezone="Europe/Berlin")
    end = datetime(y, m, d, tzinfo=UTC) + timedelta(days=1, hours=12)
    while clock.now < end:
        clock.advance(30 * 60)
        await core.scheduling.tick()
    runs = await _cron_runs(core, task.id)
    assert [r.scheduled_for for r in runs] == expected_utc
    local_dates = [r.scheduled_for.astimezone(BERLIN).date() for r in runs]
    assert local_dates.count(datetime(y, m, d).date()) == 1
    assert len(set(local_dates)) == len(local_dates)


async def test_a_refused_duplicate_slot_triggers_no_dependency_runs(core, clock) -> None:
    upstream = await make_task(core, "upstream")
    task = await make_task(core, "downstream", schedule=EVERY_5, dependencies=["upstream"])
    clock.advance(300)
    assert await core.scheduling.tick() == 1
    worker = await make_worker(core)
    for _ in range(2):  # upstream, then downstream
        clock.advance(1)
        [run] = await claim(core, worker.id)
        await report(core, worker.id, run, "completed")
    assert len(await _cron_runs(core, upstream.id)) == 1
    # A scheduler with a stale view fires the same slot again: refused, and it must not leave
    # behind a dependency run that nothing waits for.
    async with core.db.write() as conn:
        await task_rows.update_task(conn, task.id, {"next_run_at": _at(12, 5)})
    assert await core.scheduling.tick() == 0
    assert len(await _cron_runs(core, task.id)) == 1
    assert len(await _cron_runs(core, upstream.id)) == 1


async def test_two_schedulers_with_dependencies_fire_once(core, clock, database_url) -> None:
    upstream = await make_task(core, "upstream")
    task = await make_task(core, "downstream", schedule=EVERY_5, dependencies=["upstream"])
    other_db = Database(database_url)
    other = Core(other_db, CoreConfig(lease_seconds=10), clock=clock)
    try:
        clock.advance(300)
        fired = await asyncio.gather(core.scheduling.tick(), other.scheduling.tick())
    finally:
        await other_db.dispose()
    assert sum(fired) == 1
    [run] = await _cron_runs(core, task.id)
    [dep] = await _cron_runs(core, upstream.id)
    assert (await core.runs.get(run.id)).waiting_on == [dep.id]


async def test_many_tasks_due_together_fire_in_one_tick_each_once(core, clock) -> None:
    """A minute shared by many schedules is fired set-wise; a task with dependencies still waits on them."""
    every_minute = [await make_task(core, schedule="* * * * *") for _ in range(120)]
    every_second = [await make_task(core, schedule=f"* * * * * {i}") for i in (0, 30)]
    upstream = await make_task(core)
    dependent = await make_task(core, schedule="* * * * *", dependencies=[upstream.id])
    clock.advance(60)
    assert await core.scheduling.tick() == 120 + 2 + 1  # (the upstream run the dependent's triggered aside)
    assert await core.scheduling.tick() == 0

    for task, slot in [(t, _at(12, 1)) for t in every_minute[:3]] + [(every_second[0], _at(12, 1)),
                                                                      (every_second[1], _at(12, 0, 30))]:
        (run,) = await _cron_runs(core, task.id)
        assert run.scheduled_for == slot and run.status is RunStatus.QUEUED
        detail = await core.runs.get(run.id)
        assert [(h["status"], h["reason"]) for h in detail.history] == [("queued", f"cron slot {slot.isoformat()}")]
        assert (await core.tasks.get(task.id)).task.last_run_at == clock.now
    (waiting,) = await _cron_runs(core, dependent.id)
    assert waiting.status is RunStatus.PENDING
    assert (await core.tasks.get(every_minute[0].id)).task.next_run_at == _at(12, 2)
    assert (await core.tasks.get(every_second[1].id)).task.next_run_at == _at(12, 1, 30)
    assert len(await _cron_runs(core, upstream.id)) == 1

    clock.advance(30)
    assert await core.scheduling.tick() == 1  # only the schedule on second 30
    clock.advance(30)
    assert await core.scheduling.tick() == 120 + 1 + 1
    assert len(await _cron_runs(core, upstream.id)) == 1  # the dependent's second run shares the one in flight


async def test_a_run_fired_set_wise_is_the_run_create_makes(core, clock) -> None:
    """The set-wise firing builds runs in SQL from the task's row: they must not drift from `create`'s."""
    task = await make_task(core, schedule="* * * * *", priority="high", timeout_seconds=77, retry_count=2)
    clock.advance(60)
    assert await core.scheduling.tick() == 1
    (fired,) = await _cron_runs(core, task.id)
    async with core.db.write() as conn:
        made = await core.lifecycle().create(conn, (await task_rows.get_task(conn, task.id)), now=clock.now,
                                             trigger=TriggerKind.CRON, scheduled_for=_at(12, 0))
    assert made is not None
    differ = {"id", "uuid", "scheduled_for"}
    assert {k: v for k, v in vars(fired).items() if k not in differ} == {
        k: v for k, v in vars(made).items() if k not in differ}
    assert fired.uuid != made.uuid and len(fired.uuid) == 36


# --- runs created ahead of their slot ---------------------------------------------------------------------

EVERY_MINUTE = "* * * * *"
SLOT = _at(12, 1)  # an every-minute task's first slot


def _before(slot: datetime, seconds: float) -> datetime:
    return slot - timedelta(seconds=seconds)


def _ahead_of_slot(clock, slot: datetime = SLOT) -> None:
    """Move the clock to just inside the lookahead of `slot`."""
    clock.now = slot - LOOKAHEAD + timedelta(milliseconds=500)


async def _history(core: Core, run: Run) -> list[tuple[str, str | None, datetime]]:
    return [(h["status"], h["reason"], h["at"]) for h in (await core.runs.get(run.id)).history]


async def test_a_run_created_ahead_waits_for_its_slot(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_MINUTE)
    worker = await make_worker(core)
    clock.now = _before(SLOT, LOOKAHEAD.total_seconds() + 1)  # not yet within the lookahead
    assert await core.scheduling.tick() == 0
    _ahead_of_slot(clock)
    created_at = clock.now
    assert await core.scheduling.tick() == 1
    (run,) = await _cron_runs(core, task.id)
    assert run.status is RunStatus.QUEUED and run.scheduled_for == SLOT
    assert run.available_at == SLOT and run.queued_at == SLOT and run.created_at == created_at
    assert await _history(core, run) == [("queued", f"cron slot {SLOT.isoformat()}", SLOT)]
    assert (await core.tasks.get(task.id)).task.next_run_at == _at(12, 2)

    assert await claim(core, worker.id) == []  # not claimable before its slot
    clock.now = _before(SLOT, 0.001)
    assert await claim(core, worker.id) == []
    clock.now = SLOT
    (claimed,) = await claim(core, worker.id)
    assert claimed.id == run.id


async def test_ticks_across_the_lookahead_create_each_slot_once(core, clock, database_url) -> None:
    task = await make_task(core, schedule=EVERY_MINUTE)
    other_db = Database(database_url)
    other = Core(other_db, CoreConfig(lease_seconds=10), clock=clock)
    try:
        _ahead_of_slot(clock)
        fired = await asyncio.gather(core.scheduling.tick(), other.scheduling.tick())
        assert sum(fired) == 1
        for _ in range(int(LOOKAHEAD.total_seconds()) + 2):  # every second up to past the slot, both of them
            clock.advance(1)
            assert await core.scheduling.tick() + await other.scheduling.tick() == 0
    finally:
        await other_db.dispose()
    # A scheduler with a stale view (next_run_at still at the slot) cannot create it again.
    async with core.db.write() as conn:
        await task_rows.update_task(conn, task.id, {"next_run_at": SLOT})
    assert await core.scheduling.tick() == 0
    assert [r.scheduled_for for r in await _cron_runs(core, task.id)] == [SLOT]


async def test_catchup_fires_past_slots_now_and_the_next_one_ahead(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_5, catchup="all")
    clock.advance(3600 - 1)  # 12:59:59 after a downtime: 11 slots missed, 13:00 a second ahead
    assert await core.scheduling.tick() == 12
    runs = await _cron_runs(core, task.id)
    assert [r.scheduled_for for r in runs] == [_at(12, 5) + timedelta(minutes=5 * i) for i in range(12)]
    assert all(r.available_at == r.queued_at == clock.now for r in runs[:-1])  # past: claimable now
    assert runs[-1].available_at == runs[-1].queued_at == _at(13, 0)  # ahead: at its slot
    assert (await core.tasks.get(task.id)).task.next_run_at == _at(13, 5)


@pytest.mark.parametrize("policy", ["latest", "none"])
async def test_catchup_policies_keep_their_past_slots(core, clock, policy) -> None:
    task = await make_task(core, schedule=EVERY_5, catchup=policy)
    clock.advance(3600 + 90 - 1)  # 13:01:29: 13:00 is 89 s old (past the grace of "none")
    assert await core.scheduling.tick() == (1 if policy == "latest" else 0)
    _ahead_of_slot(clock, _at(13, 5))
    assert await core.scheduling.tick() == 1  # the coming slot, ahead, whatever the policy
    assert [r.scheduled_for for r in await _cron_runs(core, task.id)][-1] == _at(13, 5)


async def test_a_task_with_dependencies_fires_at_its_slot_not_ahead(core, clock) -> None:
    upstream = await make_task(core, "upstream")
    task = await make_task(core, "downstream", schedule=EVERY_MINUTE, dependencies=["upstream"])
    _ahead_of_slot(clock)
    assert await core.scheduling.tick() == 0
    assert await _cron_runs(core, upstream.id) == []  # no dependency run started early either
    assert await core.scheduling.seconds_until_due(100) == pytest.approx((SLOT - clock.now).total_seconds())
    clock.now = SLOT
    assert await core.scheduling.tick() == 1
    (run,) = await _cron_runs(core, task.id)
    assert run.status is RunStatus.PENDING and run.scheduled_for == SLOT


async def _created_ahead(core: Core, clock) -> tuple[Task, Worker]:
    """An every-minute task whose first slot's run has just been created ahead, and an idle worker."""
    task = await make_task(core, schedule=EVERY_MINUTE)
    worker = await make_worker(core)
    _ahead_of_slot(clock)
    assert await core.scheduling.tick() == 1
    return task, worker


async def _cancelled_ahead(core: Core, task_id: int, why: str) -> Run:
    (run,) = await _cron_runs(core, task_id)
    assert run.status is RunStatus.ABORTED and run.scheduled_for == SLOT
    reason = f"cancelled before its cron slot {SLOT.isoformat()}: {why}"
    assert [(status, text) for status, text, _ in await _history(core, run)] == [
        ("queued", f"cron slot {SLOT.isoformat()}"), ("aborted", reason)]
    return run


async def test_pausing_cancels_a_run_created_ahead(core, clock) -> None:
    task, worker = await _created_ahead(core, clock)
    await core.tasks.pause(task.id)
    await _cancelled_ahead(core, task.id, "the task was paused")
    clock.now = SLOT
    assert await core.scheduling.tick() == 0
    assert await claim(core, worker.id) == []


async def test_resuming_before_a_cancelled_slot_skips_it(core, clock) -> None:
    """A slot is never given to two runs: the cancelled run keeps it, and the task fires from the next."""
    task, worker = await _created_ahead(core, clock)
    await core.tasks.pause(task.id)
    clock.advance(1)
    assert (await core.tasks.resume(task.id)).next_run_at == SLOT
    assert await core.scheduling.tick() == 0
    assert (await core.tasks.get(task.id)).task.next_run_at == _at(12, 2)
    clock.now = SLOT
    assert await claim(core, worker.id) == []
    _ahead_of_slot(clock, _at(12, 2))
    assert await core.scheduling.tick() == 1
    assert [(r.scheduled_for, r.status) for r in await _cron_runs(core, task.id)] == [
        (SLOT, RunStatus.ABORTED), (_at(12, 2), RunStatus.QUEUED)]


async def test_deleting_cancels_a_run_created_ahead(core, clock) -> None:
    task, worker = await _created_ahead(core, clock)
    await core.tasks.delete(task.id)
    (run,) = await _cron_runs(core, task.id)
    assert run.status is RunStatus.ABORTED
    clock.now = SLOT
    assert await core.scheduling.tick() == 0
    assert await claim(core, worker.id) == []


async def test_a_new_schedule_cancels_a_run_created_ahead(core, clock) -> None:
    task, worker = await _created_ahead(core, clock)
    await core.tasks.update(task.id, {"description": "only the text changes"})
    assert [r.status for r in await _cron_runs(core, task.id)] == [RunStatus.QUEUED]
    updated = await core.tasks.update(task.id, {"schedule": EVERY_5})
    assert updated.next_run_at == _at(12, 5)
    await _cancelled_ahead(core, task.id, "the task's schedule changed")
    clock.now = SLOT
    assert await core.scheduling.tick() == 0
    assert await claim(core, worker.id) == []
    assert len(await _cron_runs(core, task.id)) == 1


async def test_a_task_changed_after_it_was_read_as_due_does_not_fire(core, clock) -> None:
    """The tick moves the tasks' rows before inserting runs and fires only those it moved: a pause (or a new
    schedule, or another scheduler) committed in between leaves the task unfired."""
    paused = await make_task(core, schedule=EVERY_MINUTE)
    rescheduled = await make_task(core, schedule=EVERY_MINUTE)
    kept = await make_task(core, schedule=EVERY_MINUTE)
    _ahead_of_slot(clock)
    now, horizon = clock.now, clock.now + LOOKAHEAD
    async with core.db.read() as conn:
        due = await cron_rows.due_schedules(conn, now, horizon, 100)
    await core.tasks.pause(paused.id)
    await core.tasks.update(rescheduled.id, {"schedule": EVERY_5})
    plan = plan_slots(due, now, horizon)
    async with core.db.write() as conn:
        moved = await cron_rows.plan_next(conn, due, plan.next_run_at, {d.task_id for d, _ in plan.slots}, now)
    assert moved == {kept.id}
    assert (await core.tasks.get(paused.id)).task.next_run_at is None
    assert (await core.tasks.get(rescheduled.id)).task.next_run_at == _at(12, 5)


async def _wakes(core: Core, database_url: str, action: Callable[[], Awaitable[object]]) -> bool:
    """Whether `action` wakes the pollers: this server's (SQLite, in-process) or every server's (PostgreSQL,
    a NOTIFY)."""
    if core.db.is_sqlite:
        woken = core.db.wakeup.current()
        await action()
        return woken.is_set()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        await action()
        notices = listener.notifies(timeout=2.0, stop_after=1)
        return any([n async for n in notices])


async def test_the_loop_wakes_at_the_slot_and_wakes_the_pollers(core, clock, database_url) -> None:
    await make_task(core, schedule=EVERY_MINUTE)
    assert await core.scheduling.seconds_until_due(100) == (SLOT - LOOKAHEAD - clock.now).total_seconds()
    assert await core.scheduling.seconds_until_due(5) == 5
    clock.now = SLOT - LOOKAHEAD  # when the loop wakes to create the slot's runs
    assert not await _wakes(core, database_url, core.scheduling.tick)  # not claimable: nobody to wake
    assert await core.scheduling.seconds_until_due(100) == LOOKAHEAD.total_seconds()  # next: the slot itself
    clock.now = SLOT
    assert await _wakes(core, database_url, core.scheduling.tick)
    # then the next minute's lookahead
    assert await core.scheduling.seconds_until_due(100) == (_at(12, 2) - LOOKAHEAD - SLOT).total_seconds()
    assert not await _wakes(core, database_url, core.scheduling.tick)


async def test_the_loop_wakes_when_a_retry_backoff_ends(core, clock, database_url) -> None:
    task = await make_task(core, retry_count=1)
    worker = await make_worker(core)
    await core.runs.trigger(task.id)
    (run,) = await claim(core, worker.id)
    await report(core, worker.id, run, "failed", error_message="boom")
    (retry,) = await _cron_runs(core, task.id)
    assert retry.status is RunStatus.QUEUED and retry.available_at is not None and retry.available_at > clock.now
    await core.scheduling.tick()
    assert await core.scheduling.seconds_until_due(100) == (retry.available_at - clock.now).total_seconds()
    clock.now = retry.available_at
    assert await _wakes(core, database_url, core.scheduling.tick)


async def test_a_run_waiting_for_its_slot_says_so(core, clock) -> None:
    task = await make_task(core, schedule=EVERY_MINUTE)
    _ahead_of_slot(clock)
    await core.scheduling.tick()
    (run,) = await _cron_runs(core, task.id)
    async with core.db.read() as conn:
        waiting = await job_views.dependencies(conn, run, clock.now)
        due = await job_views.dependencies(conn, run, SLOT)
    assert waiting["blockingConditions"] == [{"condition": "waiting for its cron slot at 2026-01-05T12:01:00Z",
                                              "status": "Active", "resolvedAt": None}]
    assert due["blockingConditions"][0]["condition"] == "waiting for a free worker"
