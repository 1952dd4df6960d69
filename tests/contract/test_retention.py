"""Retention purges old tracking events, log lines and samples in chunks, and keeps recent ones."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from contract_kit import claim, make_task, make_worker
from sqlalchemy import func, select

from taskyard.services.core import Core
from taskyard.services.tracking import TrackingEvent
from taskyard.storage.tables import run_events, run_logs, run_samples


async def _count(core: Core, table: object) -> int:
    async with core.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def _seed(core: Core) -> None:
    task = await make_task(core)
    await core.runs.trigger(task.id)
    worker = await make_worker(core)
    [run] = await claim(core, worker.id)
    now = core.clock()
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    events = []
    for when in (old, recent):
        events += [
            TrackingEvent(str(run.id), "fn", "milestone", {"n": 1}, when),
            TrackingEvent(str(run.id), "fn", "log", {"level": "info", "message": "hello"}, when),
            TrackingEvent(str(run.id), "fn", "metric", {"name": "rate", "value": 1.0}, when),
        ]
    await core.tracking.record(events)


async def test_purge_removes_only_what_is_older_than_the_window(core: Core) -> None:
    await _seed(core)
    before = {t.name: await _count(core, t) for t in (run_events, run_logs, run_samples)}
    assert all(n >= 2 for n in before.values()), before

    removed = await core.retention.purge()

    after = {t.name: await _count(core, t) for t in (run_events, run_logs, run_samples)}
    assert removed == {"run_events": 3, "run_logs": 1, "run_samples": 1}
    assert after == {name: before[name] - removed[name] for name in before}
    assert await core.retention.purge() == {"run_events": 0, "run_logs": 0, "run_samples": 0}


async def test_zero_days_keeps_everything(core: Core) -> None:
    await _seed(core)
    core.config = dataclasses.replace(core.config, retention_days=0)
    before = await _count(core, run_events)
    assert await core.retention.purge() == {}
    assert await _count(core, run_events) == before


async def test_idempotency_keys_older_than_a_day_are_purged(core: Core, clock: object) -> None:
    assert await core.access.begin_idempotent("s", "k", "fp") is None
    await core.access.finish_idempotent("s", "k", 201, "{}")
    assert await core.access.begin_idempotent("s", "k", "fp") == (201, "{}")
    await core.retention.purge()
    assert await core.access.begin_idempotent("s", "k", "fp") == (201, "{}")  # within a day: kept
    clock.advance(25 * 3600)  # type: ignore[attr-defined]
    await core.retention.purge()
    assert await core.access.begin_idempotent("s", "k", "fp") is None  # a fresh reservation again
