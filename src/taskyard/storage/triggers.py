"""A manual trigger on PostgreSQL in one statement, sent on its own (autocommit): the task is read, the run
and its history inserted, handed to a waiting worker when one is named and still active, the task's
`last_run_at` moved when due, and the NOTIFY sent when the run is left queued.

The general path (services/lifecycle.py) takes a transaction and four to five round trips: BEGIN, the
task, the run, the hand-over, COMMIT. On the path from a trigger to a running command those round trips
and their statements' handling were most of the server's time. This statement does what that path does
for the usual trigger (a live, active task without dependencies, of a type this server runs) and
inserts nothing otherwise; the caller then takes the general path, which also says what is wrong.
Kept equal to `new_run_values` and `hand_over`: a contract test compares runs made both ways.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import column, text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run, Task
from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind, WorkerStatus
from taskyard.storage.database import json_text
from taskyard.storage.tables import runs, tasks
from taskyard.storage.tasks import LAST_RUN_RESOLUTION
from taskyard.storage.wakeup import CHANNEL


@dataclass(frozen=True)
class HandTo:
    """The waiting poll a trigger may hand its run to (services/dispatch.py)."""

    worker_id: str
    hostname: str
    project_id: int
    task_types: list[str]
    lease_until: datetime


_TASK_PREFIX = "t_"
_RANK = " ".join(f"WHEN '{p.value}' THEN {p.rank}" for p in Priority)
_HANDED = "EXISTS (SELECT 1 FROM w)"

# Whitespace is squeezed out: psycopg parses a statement of over 4,096 characters again on every execution.
_STATEMENT = text(" ".join(f"""
WITH t AS (
    SELECT tasks.* FROM tasks
    WHERE tasks.id = :task_id AND tasks.deleted_at IS NULL
      AND (CAST(:project_id AS bigint) IS NULL OR tasks.project_id = CAST(:project_id AS bigint))
      AND tasks.status = '{TaskStatus.ACTIVE.value}' AND tasks.task_type = ANY(CAST(:task_types AS text[]))
      AND NOT EXISTS (SELECT 1 FROM task_dependencies d WHERE d.task_id = tasks.id)
), w AS (
    SELECT workers.id FROM workers, t
    WHERE workers.id = CAST(:worker_id AS text) AND workers.status = '{WorkerStatus.ACTIVE.value}'
      AND t.project_id = CAST(:poll_project_id AS bigint) AND t.task_type = ANY(CAST(:poll_types AS text[]))
), chosen AS (
    SELECT COALESCE(CAST(:priority AS text), t.priority) AS priority FROM t
), written AS (
    INSERT INTO runs (uuid, project_id, task_id, task_name, task_type, status, priority, priority_rank, parameters,
                      timeout_seconds, max_retries, retry_count, attempt, trigger, available_at, created_at,
                      updated_at, queued_at, worker_id, worker_hostname, lease_expires_at, started_at)
    SELECT :uuid, t.project_id, t.id, t.name, t.task_type,
           CASE WHEN {_HANDED} THEN '{RunStatus.RUNNING.value}' ELSE '{RunStatus.QUEUED.value}' END,
           chosen.priority, CASE chosen.priority {_RANK} END, CAST(:parameters AS jsonb),
           COALESCE(CAST(:timeout_seconds AS integer), t.timeout_seconds), t.retry_count, 0,
           CASE WHEN {_HANDED} THEN 1 ELSE 0 END, '{TriggerKind.MANUAL.value}', :now, :now, :now, :now,
           (SELECT id FROM w), CASE WHEN {_HANDED} THEN CAST(:hostname AS text) END,
           CASE WHEN {_HANDED} THEN CAST(:lease_until AS timestamptz) END,
           CASE WHEN {_HANDED} THEN CAST(:now AS timestamptz) END
    FROM t, chosen
    RETURNING *
), history AS (
    INSERT INTO run_history (run_id, attempt, status, "at", worker_id, reason)
    SELECT run_id, attempt, status, "at", worker_id, reason FROM (
        SELECT id, 0, '{RunStatus.QUEUED.value}', created_at, NULL, CAST(:reason AS text), 1 FROM written
        UNION ALL
        SELECT id, attempt, status, started_at, worker_id, NULL, 2 FROM written
        WHERE status = '{RunStatus.RUNNING.value}'
    ) AS rows (run_id, attempt, status, "at", worker_id, reason, position)
    ORDER BY position
    RETURNING 1
), touched AS (
    UPDATE tasks SET last_run_at = :now
    WHERE CAST(:touch AS boolean) AND tasks.id = (SELECT task_id FROM written)
      AND (tasks.last_run_at IS NULL OR tasks.last_run_at <= CAST(:touch_before AS timestamptz))
    RETURNING 1
)
SELECT {", ".join(f"written.{c.name}" for c in runs.c)},
       {", ".join(f"t.{c.name} AS {_TASK_PREFIX}{c.name}" for c in tasks.c)},
       CASE WHEN written.status = '{RunStatus.QUEUED.value}' THEN pg_notify('{CHANNEL}', :origin) END AS notified
FROM written, t
""".split())).columns(*runs.c, *(column(f"{_TASK_PREFIX}{c.name}", c.type) for c in tasks.c), column("notified"))


async def trigger(conn: AsyncConnection, task_id: int, *, project_id: int | None, task_types: list[str],
                  now: datetime, parameters: dict[str, Any] | None, priority: Priority | None,
                  timeout_seconds: int | None, hand_to: HandTo | None, touch: bool, origin: str,
                  ) -> tuple[Run, Task] | None:
    """The run (running when it was handed over, else queued) and its task; None when nothing was inserted
    (no such live task in scope, paused, of a type not run here, or with dependencies). `conn` must be in
    autocommit: the statement is its own transaction."""
    row = (await conn.execute(_STATEMENT, {
        "task_id": task_id, "project_id": project_id, "task_types": task_types, "uuid": str(uuid.uuid4()),
        "parameters": json_text(parameters or {}), "priority": priority.value if priority else None,
        "timeout_seconds": timeout_seconds, "now": now, "reason": "triggered",
        "worker_id": hand_to.worker_id if hand_to else None, "hostname": hand_to.hostname if hand_to else None,
        "poll_project_id": hand_to.project_id if hand_to else None,
        "poll_types": hand_to.task_types if hand_to else [],
        "lease_until": hand_to.lease_until if hand_to else None,
        "touch": touch, "touch_before": now - LAST_RUN_RESOLUTION, "origin": origin,
    })).mappings().first()
    if row is None:
        return None
    task = Task.from_row({**{key[len(_TASK_PREFIX):]: value for key, value in row.items()
                             if key.startswith(_TASK_PREFIX)}, "dependencies": []})
    return Run.from_row(row), task

