"""Cron firing, set-wise: the due schedules, one INSERT … SELECT for every slot they fire, and their next
slots, in a handful of statements however many tasks share a minute.

10,000 tasks on `* * * * *` all fire at second 0. Created one by one (a run, its history row, the task's
row: ~7 statements through SQLAlchemy each) the last of them was queued a minute late; here the database
builds the runs from the task rows itself, and Python only computes the slots (once per distinct schedule).

Runs may be created ahead of their slot (services/scheduling.py, LOOKAHEAD): such a run is queued with
`available_at` = `queued_at` = its slot, so no claim takes it before then. A slot already past is queued
as available now.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run
from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind
from taskyard.storage import bulk
from taskyard.storage.tables import run_history, runs, task_dependencies, tasks

live = tasks.c.deleted_at.is_(None)
scheduled = (live, tasks.c.status == TaskStatus.ACTIVE.value, tasks.c.schedule.is_not(None))
has_dependencies = exists().where(task_dependencies.c.task_id == tasks.c.id)


@dataclass(frozen=True)
class DueSchedule:
    """What firing needs of a due task, and no more: reading whole task rows cost more than firing them."""

    task_id: int
    schedule: str
    timezone: str
    catchup: str
    next_run_at: datetime
    has_dependencies: bool


async def due_schedules(conn: AsyncConnection, now: datetime, horizon: datetime, limit: int) -> list[DueSchedule]:
    """Tasks due by `now`, and those without dependencies due by `horizon` (they fire ahead of the slot; a
    task with dependencies fires at its slot, since firing may start runs of its dependencies)."""
    rows = await conn.execute(
        select(tasks.c.id, tasks.c.schedule, tasks.c.timezone, tasks.c.catchup, tasks.c.next_run_at,
               has_dependencies)
        .where(*scheduled, or_(tasks.c.next_run_at <= now,
                               (tasks.c.next_run_at <= horizon) & ~has_dependencies))
        .order_by(tasks.c.next_run_at).limit(limit))
    return [DueSchedule(int(r[0]), r[1], r[2], r[3], r[4], bool(r[5])) for r in rows.all()]


async def next_due(conn: AsyncConnection) -> tuple[datetime | None, datetime | None]:
    """The earliest `next_run_at` of the tasks that fire ahead of their slot (no dependencies) and of those
    that fire at it (with dependencies), in one round trip. The first walks the due index until a task
    without dependencies; the second starts from the dependency edges, which are few."""
    ahead = (select(tasks.c.next_run_at).where(*scheduled, tasks.c.next_run_at.is_not(None), ~has_dependencies)
             .order_by(tasks.c.next_run_at).limit(1).scalar_subquery())
    at_slot = (select(func.min(tasks.c.next_run_at))
               .where(*scheduled, tasks.c.id.in_(select(task_dependencies.c.task_id)))
               .scalar_subquery())
    row = (await conn.execute(select(ahead, at_slot))).one()
    return _maybe_instant(row[0]), _maybe_instant(row[1])


# The columns of a newborn queued cron run, computed by the database from its task's row. Kept equal to
# `new_run_values` in services/lifecycle.py (a contract test compares a run made each way).
_PRIORITY_RANK_SQL = "CASE t.priority " + " ".join(
    f"WHEN '{priority.value}' THEN {priority.rank}" for priority in Priority) + " END"
_NEWBORN = f"""
INSERT INTO runs (uuid, project_id, task_id, task_name, task_type, status, priority, priority_rank, parameters,
                  timeout_seconds, max_retries, retry_count, attempt, trigger, available_at, scheduled_for,
                  created_at, updated_at, queued_at)
SELECT s.uuid, t.project_id, t.id, t.name, t.task_type, '{RunStatus.QUEUED.value}', t.priority,
       {_PRIORITY_RANK_SQL}, {{empty_object}}, t.timeout_seconds, t.retry_count, 0, 0, '{TriggerKind.CRON.value}',
       {{available}}, s.slot, :now, :now, {{available}}
FROM {{slots}} JOIN tasks t ON t.id = s.task_id AND t.deleted_at IS NULL AND t.status = '{TaskStatus.ACTIVE.value}'
ON CONFLICT (task_id, scheduled_for) DO NOTHING
RETURNING id, task_id, scheduled_for
"""
# A slot still ahead is when the run becomes available (and counts as queued); a past slot, now.
_POSTGRES_INSERT = text(_NEWBORN.format(
    empty_object="'{}'::jsonb", available="GREATEST(s.slot, CAST(:now AS timestamptz))",
    slots="unnest(CAST(:task_ids AS bigint[]), CAST(:slots AS timestamptz[]), CAST(:uuids AS text[])) "
          "AS s(task_id, slot, uuid)"))
# Parameters are JSON text on SQLite, so slots travel as one JSON array read by json_each.
_SQLITE_INSERT = text(_NEWBORN.format(
    empty_object="'{}'", available="max(s.slot, :now)",  # fixed-width UTC text: string order is time order
    slots="(SELECT json_extract(value, '$[0]') AS task_id, json_extract(value, '$[1]') AS slot, "
          "json_extract(value, '$[2]') AS uuid FROM json_each(:slots)) AS s"))


async def insert_slot_runs(conn: AsyncConnection, fires: list[tuple[int, datetime]], now: datetime,
                           ) -> list[tuple[int, int, datetime]]:
    """Queue a run for each (task id, slot), skipping slots already taken (two schedulers never fire one
    slot twice: the (task_id, scheduled_for) key) and tasks no longer active, with their first history
    rows. A run whose slot is still ahead of `now` is queued as of its slot. Returns (run id, task id,
    slot) of the runs created."""
    if not fires:
        return []
    uuids = [str(uuid.uuid4()) for _ in fires]
    params: dict[str, Any]
    if conn.dialect.name == "postgresql":
        params = {"task_ids": [task_id for task_id, _ in fires], "slots": [slot for _, slot in fires],
                  "uuids": uuids, "now": now}
        inserted = (await conn.execute(_POSTGRES_INSERT, params)).all()
    else:
        slots = json.dumps([[task_id, bulk.sqlite_instant(slot), key]
                            for (task_id, slot), key in zip(fires, uuids, strict=True)])
        inserted = (await conn.execute(_SQLITE_INSERT, {"slots": slots, "now": bulk.sqlite_instant(now)})).all()
    created = [(int(run_id), int(task_id), _instant(slot)) for run_id, task_id, slot in inserted]
    await bulk.append(conn, run_history, ("run_id", "attempt", "status", "at", "reason"), [
        (run_id, 0, RunStatus.QUEUED.value, max(slot, now), f"cron slot {slot.isoformat()}")
        for run_id, _, slot in created])
    return created


async def runs_ahead(conn: AsyncConnection, task_id: int, now: datetime) -> list[Run]:
    """A task's cron runs created ahead of a slot that has not come yet (queued, available later)."""
    rows = (await conn.execute(select(runs).where(
        runs.c.task_id == task_id, runs.c.status == RunStatus.QUEUED, runs.c.trigger == TriggerKind.CRON,
        runs.c.retry_count == 0, runs.c.available_at > now))).mappings().all()
    return [Run.from_row(r) for r in rows]


async def plan_next(conn: AsyncConnection, due: list[DueSchedule], next_run_at: dict[int, datetime | None],
                    firing: Iterable[int], now: datetime) -> set[int]:
    """Move each due task's `next_run_at` (None: the schedule is unusable, it stops) and, for those about to
    fire, `last_run_at`, before their runs are inserted; returns the tasks moved, the only ones that may
    fire. A task paused, deleted, rescheduled or fired by another scheduler since `due` was read is left
    alone: the UPDATE takes the rows' locks and re-checks them, so on PostgreSQL such a change either came
    first (the task is not moved, so not fired) or waits for this transaction (and then sees its runs, see
    `cancel_runs_ahead`). One UPDATE per distinct (schedule, zone, planned slot, next slot, firing), since
    tasks that fire together mostly share them all."""
    firing = set(firing)
    groups: dict[tuple[str, str, datetime, datetime | None, bool], list[int]] = defaultdict(list)
    for task in due:
        if task.task_id in next_run_at:
            groups[(task.schedule, task.timezone, task.next_run_at, next_run_at[task.task_id],
                    task.task_id in firing)].append(task.task_id)
    moved: set[int] = set()
    for (schedule, timezone, planned, instant, fires), task_ids in groups.items():
        values: dict[str, Any] = {"next_run_at": instant}
        if fires:
            values["last_run_at"] = now
        result = await conn.execute(
            update(tasks).where(_among(conn, task_ids), *scheduled, tasks.c.schedule == schedule,
                                tasks.c.timezone == timezone, tasks.c.next_run_at == planned)
            .values(**values).returning(tasks.c.id))
        moved.update(int(task_id) for task_id in result.scalars())
    return moved


def _among(conn: AsyncConnection, task_ids: list[int]) -> Any:
    """`tasks.id IN (…)` as one parameter: thousands of placeholders cost more to bind than the update."""
    if conn.dialect.name == "postgresql":
        return text("tasks.id = ANY(CAST(:ids AS bigint[]))").bindparams(ids=task_ids)
    return text("tasks.id IN (SELECT value FROM json_each(:ids))").bindparams(ids=json.dumps(task_ids))


def _maybe_instant(value: datetime | str | None) -> datetime | None:
    return None if value is None else _instant(value)


def _instant(value: datetime | str) -> datetime:
    """A text statement's RETURNING is not typed: SQLite hands back the stored text."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)
