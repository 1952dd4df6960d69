"""Cron firing, set-wise: the due schedules, one INSERT … SELECT for every slot they fire, and their next
slots, in a handful of statements however many tasks share a minute.

10,000 tasks on `* * * * *` all fire at second 0. Created one by one (a run, its history row, the task's
row: ~7 statements through SQLAlchemy each) the last of them was queued a minute late; here the database
builds the runs from the task rows itself, and Python only computes the slots (once per distinct schedule).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.status import Priority, RunStatus, TriggerKind
from taskyard.storage import bulk
from taskyard.storage.tables import run_history, task_dependencies, tasks

live = tasks.c.deleted_at.is_(None)


@dataclass(frozen=True)
class DueSchedule:
    """What firing needs of a due task, and no more: reading whole task rows cost more than firing them."""

    task_id: int
    schedule: str
    timezone: str
    catchup: str
    next_run_at: datetime
    has_dependencies: bool


async def due_schedules(conn: AsyncConnection, now: datetime, limit: int) -> list[DueSchedule]:
    depends = exists().where(task_dependencies.c.task_id == tasks.c.id)
    rows = await conn.execute(
        select(tasks.c.id, tasks.c.schedule, tasks.c.timezone, tasks.c.catchup, tasks.c.next_run_at, depends)
        .where(live, tasks.c.status == "active", tasks.c.schedule.is_not(None), tasks.c.next_run_at <= now)
        .order_by(tasks.c.next_run_at).limit(limit))
    return [DueSchedule(int(r[0]), r[1], r[2], r[3], r[4], bool(r[5])) for r in rows.all()]


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
       :now, s.slot, :now, :now, :now
FROM {{slots}} JOIN tasks t ON t.id = s.task_id AND t.deleted_at IS NULL
ON CONFLICT (task_id, scheduled_for) DO NOTHING
RETURNING id, task_id, scheduled_for
"""
_POSTGRES_INSERT = text(_NEWBORN.format(
    empty_object="'{}'::jsonb",
    slots="unnest(CAST(:task_ids AS bigint[]), CAST(:slots AS timestamptz[]), CAST(:uuids AS text[])) "
          "AS s(task_id, slot, uuid)"))
# Parameters are JSON text on SQLite, so slots travel as one JSON array read by json_each.
_SQLITE_INSERT = text(_NEWBORN.format(
    empty_object="'{}'",
    slots="(SELECT json_extract(value, '$[0]') AS task_id, json_extract(value, '$[1]') AS slot, "
          "json_extract(value, '$[2]') AS uuid FROM json_each(:slots)) AS s"))


async def insert_slot_runs(conn: AsyncConnection, fires: list[tuple[int, datetime]], now: datetime,
                           ) -> list[tuple[int, int, datetime]]:
    """Queue a run for each (task id, slot), skipping slots already taken (two schedulers never fire one
    slot twice: the (task_id, scheduled_for) key), with their first history rows. Returns (run id, task
    id, slot) of the runs created."""
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
        (run_id, 0, RunStatus.QUEUED.value, now, f"cron slot {slot.isoformat()}") for run_id, _, slot in created])
    return created


async def plan_next(conn: AsyncConnection, next_run_at: dict[int, datetime | None], fired: Iterable[int],
                    now: datetime) -> None:
    """Move each task's `next_run_at` (None: the schedule is unusable, it stops) and, for those that fired,
    `last_run_at`: one UPDATE per distinct (instant, fired), since tasks that fired together mostly fire
    together again."""
    fired = set(fired)
    groups: dict[tuple[datetime | None, bool], list[int]] = defaultdict(list)
    for task_id, instant in next_run_at.items():
        groups[(instant, task_id in fired)].append(task_id)
    for (instant, did_fire), task_ids in groups.items():
        values: dict[str, Any] = {"next_run_at": instant}
        if did_fire:
            values["last_run_at"] = now
        await conn.execute(update(tasks).where(_among(conn, task_ids), live).values(**values))


def _among(conn: AsyncConnection, task_ids: list[int]) -> Any:
    """`tasks.id IN (…)` as one parameter: thousands of placeholders cost more to bind than the update."""
    if conn.dialect.name == "postgresql":
        return text("tasks.id = ANY(CAST(:ids AS bigint[]))").bindparams(ids=task_ids)
    return text("tasks.id IN (SELECT value FROM json_each(:ids))").bindparams(ids=json.dumps(task_ids))


def _instant(value: datetime | str) -> datetime:
    """A text statement's RETURNING is not typed: SQLite hands back the stored text."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)
