"""Tracking events interpreted at ingestion: progress, stages, logs and metrics land in their tables in the
same transaction as the events; log lines and samples sent as such land beside them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contract_kit import claim, make_task, make_worker
from sqlalchemy import select

from taskyard.domain.errors import NotFound, ValidationFailed
from taskyard.domain.models import Run
from taskyard.services.core import Core
from taskyard.services.tracking import TrackingEvent
from taskyard.services.tracking_lines import TrackingLog, TrackingSample
from taskyard.storage.tables import run_events, run_logs, run_samples, run_stages, runs

T0 = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(run: Run | str, name: str, data: Any = None, seconds: float = 0) -> TrackingEvent:
    run_id = run if isinstance(run, str) else str(run.id)
    return TrackingEvent(run_id=run_id, function_name="fn", event_name=name, data=data, timestamp=at(seconds))


async def running_run(core: Core) -> tuple[Run, str]:
    task = await make_task(core)
    await core.runs.trigger(task.id)
    worker = await make_worker(core)
    [run] = await claim(core, worker.id)
    return run, worker.id


async def rows(core: Core, table: Any, run_id: int) -> list[dict[str, Any]]:
    order = [table.c.stage_order] if table is run_stages else [table.c.id]
    async with core.db.read() as conn:
        result = await conn.execute(select(table).where(table.c.run_id == run_id).order_by(*order))
        return [dict(r) for r in result.mappings().all()]


async def run_row(core: Core, run_id: int) -> dict[str, Any]:
    async with core.db.read() as conn:
        return dict((await conn.execute(select(runs).where(runs.c.id == run_id))).mappings().one())


async def test_progress_sets_the_run_progress_and_activity(core: Core) -> None:
    run, _ = await running_run(core)
    await core.tracking.record([ev(run, "progress", {"percentage": 10, "message": "loading"}, 1),
                                ev(run, "progress", {"percentage": 42.5, "message": "crunching"}, 2)])
    row = await run_row(core, run.id)
    assert row["progress"] == pytest.approx(42.5)
    assert row["current_activity"] == {"operation": "crunching"}

    # No message: the activity stays; out-of-range percentages are clamped.
    await core.tracking.record([ev(run, "progress", {"percentage": 250}, 3)])
    row = await run_row(core, run.id)
    assert row["progress"] == 100.0 and row["current_activity"] == {"operation": "crunching"}
    # Every event is still in the timeline.
    assert [e.event_name for e in await core.tracking.events_of(str(run.id)) if e.id is not None] == \
        ["progress"] * 3


async def test_stages_are_upserted_in_order(core: Core, clock) -> None:
    run, _ = await running_run(core)
    await core.tracking.record([
        ev(run, "stage_start", {"stage": "Load", "order": 1, "totalRecords": 1000}, 1),
        ev(run, "stage_progress", {"stage": "Load", "order": 1, "recordsProcessed": 250, "totalRecords": 1000}, 2),
        ev(run, "stage_progress", {"stage": "Load", "order": 1, "recordsProcessed": 500, "totalRecords": 1000}, 3),
    ])
    [load] = await rows(core, run_stages, run.id)
    assert (load["name"], load["stage_order"], load["status"]) == ("Load", 1, "Running")
    assert load["progress"] == pytest.approx(50.0)
    assert (load["records_processed"], load["total_records"]) == (500, 1000)
    assert load["started_at"] == at(1) and load["ended_at"] is None and load["updated_at"] == clock.now

    # A later batch continues the stored row; a stage without an order takes the next one.
    await core.tracking.record([
        ev(run, "stage_end", {"stage": "Load", "order": 1, "status": "Completed", "recordsProcessed": 990}, 4),
        ev(run, "stage_start", {"stage": "Transform"}, 5),
        ev(run, "stage_progress", {"stage": "Transform", "recordsProcessed": 7}, 6),
        ev(run, "stage_end", {"stage": "Transform", "status": "Failed", "recordsProcessed": 9,
                              "error": "ValueError('bad row')"}, 7),
        ev(run, "stage_progress", {"stage": "Save", "recordsProcessed": 1, "totalRecords": 4}, 8),
    ])
    load, transform, save = await rows(core, run_stages, run.id)
    assert (load["status"], load["progress"], load["records_processed"]) == ("Completed", 100.0, 990)
    assert load["started_at"] == at(1) and load["ended_at"] == at(4)
    assert (transform["stage_order"], transform["status"], transform["records_processed"]) == (2, "Failed", 9)
    assert transform["progress"] is None  # no total known
    assert transform["started_at"] == at(5) and transform["ended_at"] == at(7)
    assert transform["metrics"] == {"error": "ValueError('bad row')"}
    # A stage first seen through its progress is running from then.
    assert (save["stage_order"], save["status"], save["progress"]) == (3, "Running", pytest.approx(25.0))
    assert save["started_at"] == at(8)


async def test_logs_land_in_run_logs(core: Core) -> None:
    run, _ = await running_run(core)
    await core.tracking.record([
        ev(run, "log", {"level": "WARNING", "message": "125 rows without timestamps", "component": "Validator",
                        "stage": "Load", "details": {"rows": 125}}, 1),
        ev(run, "log", {"level": "critical", "message": "disk almost full"}, 2),
        ev(run, "log", {"level": "chatty", "message": 42}, 3),
        ev(run, "log", {"level": "debug", "message": "x", "details": [1, 2]}, 4),
    ])
    lines = await rows(core, run_logs, run.id)
    assert [(r["level"], r["stream"], r["message"], r["attempt"]) for r in lines] == [
        ("warn", "sdk", "125 rows without timestamps", 1), ("error", "sdk", "disk almost full", 1),
        ("info", "sdk", "42", 1), ("debug", "sdk", "x", 1)]
    first = lines[0]
    assert (first["component"], first["stage"], first["details"], first["timestamp"]) == \
        ("Validator", "Load", {"rows": 125}, at(1))
    assert lines[1]["component"] is None and lines[1]["details"] is None
    assert lines[3]["details"] == {"value": [1, 2]}
    # They read like any other line of the run.
    detail = await core.runs.get(run.id)
    assert any(line["message"] == "disk almost full" for line in detail.logs)


async def test_metrics_land_in_run_samples(core: Core) -> None:
    run, _ = await running_run(core)
    await core.tracking.record([ev(run, "metric", {"name": "records_per_second", "value": 1250, "unit": "rps"}, 1),
                                ev(run, "metric", {"name": "loss", "value": 0.25}, 2)])
    samples = await rows(core, run_samples, run.id)
    assert [(s["name"], s["value"], s["unit"], s["source"], s["timestamp"]) for s in samples] == [
        ("records_per_second", 1250.0, "rps", "task", at(1)), ("loss", 0.25, None, "task", at(2))]


async def test_one_batch_touching_three_runs(core: Core) -> None:
    first, _ = await running_run(core)
    second, _ = await running_run(core)
    events = []
    for i in range(3):
        events += [ev(first, "progress", {"percentage": 10 * (i + 1)}, i),
                   ev(second, "metric", {"name": "n", "value": i}, i),
                   ev("outside-1", "stage_start", {"stage": f"s{i}"}, i),
                   ev("outside-1", "log", {"level": "info", "message": f"line {i}"}, i)]
    events.append(ev(second, "progress", {"percentage": 99, "message": "almost"}, 5))
    assert await core.tracking.record(events) == len(events)

    assert (await run_row(core, first.id))["progress"] == 30.0
    second_row = await run_row(core, second.id)
    assert second_row["progress"] == 99.0 and second_row["current_activity"] == {"operation": "almost"}
    assert [s["value"] for s in await rows(core, run_samples, second.id)] == [0.0, 1.0, 2.0]
    external = (await core.tracking.list_runs())[0]
    assert external.run_id == "outside-1"
    stages = await rows(core, run_stages, external.id)
    assert [(s["name"], s["stage_order"], s["status"]) for s in stages] == \
        [("s0", 1, "Running"), ("s1", 2, "Running"), ("s2", 3, "Running")]
    assert [(r["message"], r["attempt"]) for r in await rows(core, run_logs, external.id)] == \
        [("line 0", 1), ("line 1", 1), ("line 2", 1)]
    async with core.db.read() as conn:
        stored = (await conn.execute(select(run_events.c.run_id))).scalars().all()
    assert len(stored) == len(events)


@pytest.mark.parametrize(("name", "data"), [
    ("progress", None), ("progress", "50%"), ("progress", {"percentage": "50"}), ("progress", {"percentage": True}),
    ("progress", {"message": "no number"}), ("progress", [1, 2]),
    ("stage_start", {"order": 1}), ("stage_start", {"stage": ""}), ("stage_start", {"stage": "a", "order": -1}),
    ("stage_start", {"stage": "a", "order": 2**40}), ("stage_progress", {"stage": "a", "recordsProcessed": 1.5}),
    ("stage_progress", {"stage": "a", "totalRecords": "many"}), ("stage_end", {"stage": "a", "status": "Done"}),
    ("stage_end", {"stage": {"nested": 1}}), ("log", {"level": "info"}), ("log", {"message": {"a": 1}}),
    ("log", "just text"), ("metric", {"name": "x"}), ("metric", {"name": "x", "value": "fast"}),
    ("metric", {"value": 1}), ("metric", {"name": "x", "value": 2**2000}),
])
async def test_malformed_payloads_are_plain_events(core: Core, name: str, data: Any) -> None:
    run, _ = await running_run(core)
    assert await core.tracking.record([ev(run, name, data, 1), ev(run, "milestone", {"n": 1}, 2)]) == 2
    row = await run_row(core, run.id)
    assert row["progress"] is None and row["current_activity"] is None
    for table in (run_stages, run_logs, run_samples):
        assert await rows(core, table, run.id) == []
    names = [e.event_name for e in await core.tracking.events_of(str(run.id)) if e.id is not None]
    assert names == [name, "milestone"]


async def test_logs_and_samples_sent_as_such_are_stored_with_the_events(core: Core, clock) -> None:
    run, _worker_id = await running_run(core)
    samples = [TrackingSample(str(run.id), "cpu", 12.5, "percent", "worker", at(1)),
               TrackingSample(str(run.id), "memory_mb", 64.0, "MB", "worker", at(1)),
               TrackingSample(str(run.id), "connections", 2, "count", "worker")]
    logs = [TrackingLog(str(run.id), "hello", "info", "stdout", timestamp=at(1)),
            TrackingLog(run.uuid, "oops", "ERROR", "stderr", attempt=run.attempt),
            TrackingLog(str(run.id), "structured", "warning", component="Loader", stage="Load",
                        details={"rows": 3})]
    event = TrackingEvent(str(run.id), "f", "milestone", {"k": 1})
    assert await core.tracking.record([event], logs=logs, samples=samples) == 7
    stored = await rows(core, run_samples, run.id)
    assert [(s["name"], s["value"], s["unit"], s["source"], s["timestamp"]) for s in stored] == [
        ("cpu", 12.5, "percent", "worker", at(1)), ("memory_mb", 64.0, "MB", "worker", at(1)),
        ("connections", 2.0, "count", "worker", clock.now)]
    lines = await rows(core, run_logs, run.id)
    assert [(x["message"], x["level"], x["stream"], x["attempt"]) for x in lines] == [
        ("hello", "info", "stdout", run.attempt), ("oops", "error", "stderr", run.attempt),
        ("structured", "warn", "sdk", run.attempt)]
    assert (lines[2]["component"], lines[2]["stage"], lines[2]["details"]) == ("Loader", "Load", {"rows": 3})
    assert lines[0]["timestamp"] == at(1) and lines[1]["timestamp"] == clock.now

    # A line of a run that does not exist, or a bad sample, refuses the whole batch.
    with pytest.raises(NotFound):
        await core.tracking.record([event], logs=[TrackingLog("no-such-run", "x")])
    for bad in (TrackingSample(str(run.id), "cpu", float("nan")), TrackingSample(str(run.id), " ", 1.0),
                TrackingSample(str(run.id), "cpu", 1.0, source="elsewhere")):
        with pytest.raises(ValidationFailed):
            await core.tracking.record([], samples=[bad])
    with pytest.raises(ValidationFailed):
        await core.tracking.record([], logs=[TrackingLog(str(run.id), "x", attempt=0)])
    assert len(await rows(core, run_samples, run.id)) == 3 and len(await rows(core, run_logs, run.id)) == 3
