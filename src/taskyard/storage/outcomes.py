"""Finishing many runs in one statement: the outcomes of a worker's report that are plain (each run still
running the reporting attempt, no retry to plan, no run waiting on it or waited on by it), and the one
read that tells whether they are.

One guarded status change per run cost a statement, a round trip and SQLAlchemy's parameter handling
each; a report of 16 runs was most of a server's time per run. Here the reported values travel as arrays
(PostgreSQL) or one JSON document (SQLite), and one UPDATE … FROM moves every run that is still held by
the reporting attempt, writing its history row in the same statement on PostgreSQL (a CTE) and in one
bulk append on SQLite. A run that moved under the report (aborted, reaped) is simply not among the rows
returned, exactly as the one-run guarded change returns nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus
from taskyard.storage import bulk
from taskyard.storage.tables import run_history, run_waits, runs


@dataclass(frozen=True)
class RunState:
    """What deciding whether an outcome is plain needs of its run, and no more (a whole run row costs
    several times as much to read and build)."""

    run_id: int
    status: RunStatus
    attempt: int
    worker_id: str | None
    retry_count: int
    max_retries: int
    started_at: datetime | None
    in_waits: bool  # it waits on another run, or another run waits on it


_STATES = select(
    runs.c.id, runs.c.status, runs.c.attempt, runs.c.worker_id, runs.c.retry_count, runs.c.max_retries,
    runs.c.started_at,
    exists().where(or_(run_waits.c.run_id == runs.c.id, run_waits.c.dependency_run_id == runs.c.id)),
).where(runs.c.id.in_(bindparam("run_ids", expanding=True)), runs.c.project_id == bindparam("project_id"))


async def states(conn: AsyncConnection, run_ids: list[int], *, project_id: int) -> dict[int, RunState]:
    """The states of these runs of one project (a run of another project is missing, as if it did not exist)."""
    if not run_ids:
        return {}
    rows = await conn.execute(_STATES, {"run_ids": run_ids, "project_id": project_id})
    return {int(r[0]): RunState(int(r[0]), RunStatus(r[1]), int(r[2]), r[3], int(r[4]), int(r[5]), r[6], bool(r[7]))
            for r in rows.all()}


@dataclass(frozen=True)
class Finish:
    """One run's final status as reported by the attempt that holds it."""

    run_id: int
    attempt: int
    status: RunStatus
    result: str | None
    exit_code: int | None
    error_message: str | None
    execution_time: float | None
    reason: str | None  # the history row's


_RUN_COLUMNS = ", ".join(f'runs."{column.name}"' for column in runs.c)
_SET = """status = d.status, result = d.result, exit_code = d.exit_code, error_message = d.error_message,
          execution_time = d.execution_time, completed_at = :now, updated_at = :now, lease_expires_at = NULL"""
_GUARD = f"""runs.id = d.id AND runs.status = '{RunStatus.RUNNING.value}' AND runs.attempt = d.attempt
             AND runs.worker_id = :worker_id"""

_POSTGRES = text(f"""
WITH d AS (
    SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
                         CAST(:results AS text[]), CAST(:exit_codes AS integer[]), CAST(:errors AS text[]),
                         CAST(:times AS double precision[]), CAST(:reasons AS text[]))
        AS d(id, attempt, status, result, exit_code, error_message, execution_time, reason)
    ORDER BY id
), written AS (
    UPDATE runs SET {_SET} FROM d WHERE {_GUARD}
    RETURNING {_RUN_COLUMNS}, d.reason AS history_reason
), history AS (
    INSERT INTO run_history (run_id, attempt, status, "at", worker_id, reason)
    SELECT id, attempt, status, updated_at, worker_id, history_reason FROM written
)
SELECT {", ".join(f'"{column.name}"' for column in runs.c)} FROM written
""").columns(*runs.c)

_SQLITE = text(f"""
UPDATE runs SET {_SET}
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS attempt,
             json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS result,
             json_extract(value, '$[4]') AS exit_code, json_extract(value, '$[5]') AS error_message,
             json_extract(value, '$[6]') AS execution_time
      FROM json_each(:finishes)) AS d
WHERE {_GUARD}
RETURNING {_RUN_COLUMNS}
""").columns(*runs.c)


async def finish_runs(conn: AsyncConnection, finishes: list[Finish], *, worker_id: str, now: datetime) -> list[Run]:
    """Move each run from running to its final status if the given attempt of this worker still holds it,
    with its history row; returns the runs moved."""
    if not finishes:
        return []
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {
            "ids": [f.run_id for f in finishes], "attempts": [f.attempt for f in finishes],
            "statuses": [f.status.value for f in finishes], "results": [f.result for f in finishes],
            "exit_codes": [f.exit_code for f in finishes], "errors": [f.error_message for f in finishes],
            "times": [f.execution_time for f in finishes], "reasons": [f.reason for f in finishes],
            "now": now, "worker_id": worker_id}
        rows = (await conn.execute(_POSTGRES, params)).mappings().all()
        return [Run.from_row(row) for row in rows]
    document = json.dumps([[f.run_id, f.attempt, f.status.value, f.result, f.exit_code, f.error_message,
                            f.execution_time] for f in finishes])
    rows = (await conn.execute(_SQLITE, {"finishes": document, "now": bulk.sqlite_instant(now),
                                         "worker_id": worker_id})).mappings().all()
    moved = [Run.from_row(row) for row in rows]
    reasons = {f.run_id: f.reason for f in finishes}
    await bulk.append(conn, run_history, ("run_id", "attempt", "status", "at", "worker_id", "reason"), [
        (run.id, run.attempt, run.status.value, now, worker_id, reasons[run.id]) for run in moved])
    return moved
