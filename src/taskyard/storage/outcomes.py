"""Finishing a worker's report set-wise when every outcome in it is plain: each run still running the
reporting attempt, no retry to plan, no run waiting on it or waited on by it. Then nothing but the runs'
own rows and history change, and that is done for all of them at once; otherwise nothing is written and
the caller applies the report one run at a time (services/lifecycle.py).

One guarded status change per run cost a statement, a round trip and SQLAlchemy's parameter handling
each; a report of 16 runs was most of a server's time per run. On PostgreSQL the check, the UPDATE and
the history rows are one statement (the values travel as arrays); on SQLite, in process, a narrow read
decides, then one UPDATE … FROM a JSON document and one bulk append. A run that moved under the report
(aborted, reaped) is simply not among the runs returned, as the one-run guarded change returns nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, bindparam, column, exists, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus
from taskyard.storage import bulk
from taskyard.storage.tables import run_history, run_waits, runs


@dataclass(frozen=True)
class Outcome:
    """One run's reported outcome as the final status it means when no retry follows."""

    run_id: int
    attempt: int
    status: RunStatus  # completed, failed (also for a timeout) or aborted
    result: str | None
    exit_code: int | None
    error_message: str | None
    reason: str | None  # the history row's


async def finish_if_all_plain(conn: AsyncConnection, outcomes: list[Outcome], *, worker_id: str, project_id: int,
                              now: datetime) -> list[Run] | None:
    """Every run moved to its final status with its history row, if every outcome is plain; then the runs
    moved (one missing moved under the report). None, with nothing written, if any is not plain."""
    if not outcomes:
        return []
    if conn.dialect.name == "postgresql":
        return await _postgres(conn, outcomes, worker_id=worker_id, project_id=project_id, now=now)
    return await _sqlite(conn, outcomes, worker_id=worker_id, project_id=project_id, now=now)


# -- PostgreSQL: one statement ------------------------------------------------------------------------

_RUN_COLUMNS = ", ".join(f'runs."{column.name}"' for column in runs.c)
_HELD = f"""runs.id = d.id AND runs.status = '{RunStatus.RUNNING.value}' AND runs.attempt = d.attempt
            AND runs.worker_id = :worker_id"""
_SET = """status = d.status, result = d.result, exit_code = d.exit_code, error_message = d.error_message,
          completed_at = :now, updated_at = :now, lease_expires_at = NULL"""

_POSTGRES = text(" ".join(f"""
WITH d AS (
    SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
                         CAST(:results AS text[]), CAST(:exit_codes AS integer[]), CAST(:errors AS text[]),
                         CAST(:reasons AS text[]))
        AS d(id, attempt, status, result, exit_code, error_message, reason)
    ORDER BY id
), plain AS (
    SELECT count(*) = CAST(:n AS bigint) AS yes FROM d JOIN runs ON {_HELD}
    WHERE runs.project_id = :project_id
      AND (d.status <> '{RunStatus.FAILED.value}' OR runs.retry_count >= runs.max_retries)
      AND NOT EXISTS (SELECT 1 FROM run_waits w WHERE w.run_id = runs.id)
      AND NOT EXISTS (SELECT 1 FROM run_waits w WHERE w.dependency_run_id = runs.id)
), written AS (
    UPDATE runs SET {_SET},
        execution_time = round(EXTRACT(EPOCH FROM CAST(:now AS timestamptz) - runs.started_at), 6)
    FROM d WHERE (SELECT yes FROM plain) AND {_HELD}
    RETURNING {_RUN_COLUMNS}, d.reason AS history_reason
), history AS (
    INSERT INTO run_history (run_id, attempt, status, "at", worker_id, reason)
    SELECT id, attempt, status, updated_at, worker_id, history_reason FROM written
)
SELECT plain.yes AS all_plain, {", ".join(f'written."{column.name}"' for column in runs.c)}
FROM plain LEFT JOIN written ON true
""".split())).columns(column("all_plain", Boolean), *runs.c)


async def _postgres(conn: AsyncConnection, outcomes: list[Outcome], *, worker_id: str, project_id: int,
                    now: datetime) -> list[Run] | None:
    params: dict[str, Any] = {
        "ids": [o.run_id for o in outcomes], "attempts": [o.attempt for o in outcomes],
        "statuses": [o.status.value for o in outcomes], "results": [o.result for o in outcomes],
        "exit_codes": [o.exit_code for o in outcomes], "errors": [o.error_message for o in outcomes],
        "reasons": [o.reason for o in outcomes], "n": len(outcomes), "now": now, "worker_id": worker_id,
        "project_id": project_id}
    rows = (await conn.execute(_POSTGRES, params)).mappings().all()
    if not rows or not rows[0]["all_plain"]:
        return None
    return [Run.from_row(row) for row in rows if row["id"] is not None]


# -- SQLite: a narrow read, then one UPDATE -------------------------------------------------------------

_STATES = select(
    runs.c.id, runs.c.status, runs.c.attempt, runs.c.worker_id, runs.c.retry_count, runs.c.max_retries,
    runs.c.started_at,
    exists().where(or_(run_waits.c.run_id == runs.c.id, run_waits.c.dependency_run_id == runs.c.id)),
).where(runs.c.id.in_(bindparam("run_ids", expanding=True)), runs.c.project_id == bindparam("project_id"))

_SQLITE = text(f"""
UPDATE runs SET {_SET}, execution_time = d.execution_time
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS attempt,
             json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS result,
             json_extract(value, '$[4]') AS exit_code, json_extract(value, '$[5]') AS error_message,
             json_extract(value, '$[6]') AS execution_time
      FROM json_each(:finishes)) AS d
WHERE {_HELD}
RETURNING {_RUN_COLUMNS}
""").columns(*runs.c)


async def _sqlite(conn: AsyncConnection, outcomes: list[Outcome], *, worker_id: str, project_id: int,
                  now: datetime) -> list[Run] | None:
    rows = await conn.execute(_STATES, {"run_ids": [o.run_id for o in outcomes], "project_id": project_id})
    states = {int(r[0]): r for r in rows.all()}
    finishes = []
    for o in outcomes:
        state = states.get(o.run_id)
        if (state is None or state[1] != RunStatus.RUNNING.value or state[2] != o.attempt or state[3] != worker_id
                or state[7] or (o.status is RunStatus.FAILED and state[4] < state[5])):
            return None
        started = state[6]
        elapsed = round((now - started).total_seconds(), 6) if started is not None else None
        finishes.append([o.run_id, o.attempt, o.status.value, o.result, o.exit_code, o.error_message, elapsed])
    moved = [Run.from_row(row) for row in (await conn.execute(_SQLITE, {
        "finishes": json.dumps(finishes), "now": bulk.sqlite_instant(now), "worker_id": worker_id,
    })).mappings().all()]
    reasons = {o.run_id: o.reason for o in outcomes}
    await bulk.append(conn, run_history, ("run_id", "attempt", "status", "at", "worker_id", "reason"), [
        (run.id, run.attempt, run.status.value, now, worker_id, reasons[run.id]) for run in moved])
    return moved
