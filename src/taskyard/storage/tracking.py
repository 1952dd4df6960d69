"""Tracking rows: events, log lines and metric samples appended in bulk (storage.bulk), and what events
mean for a run: its progress, and its stages (one multi-row upsert for the stages a batch touches)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.storage import bulk
from taskyard.storage.bulk import Row
from taskyard.storage.tables import run_events, run_logs, run_samples, run_stages, runs

# Bound parameters per statement: far below SQLite's limit (32766) and PostgreSQL's (65535).
_MAX_PARAMETERS = 16_000

STAGE_COLUMNS = ("run_id", "name", "stage_order", "status", "progress", "records_processed", "total_records",
                 "started_at", "ended_at", "updated_at", "metrics")


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    if not rows:
        return
    size = max(1, _MAX_PARAMETERS // max(1, len(rows[0])))
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


EVENT_COLUMNS = ("run_id", "project_id", "name", "data", "timestamp")
LOG_COLUMNS = ("run_id", "attempt", "timestamp", "level", "stream", "message", "component", "stage", "details")
SAMPLE_COLUMNS = ("run_id", "name", "value", "unit", "source", "timestamp")


async def insert_events(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """run_events rows, tuples in EVENT_COLUMNS order."""
    await bulk.append(conn, run_events, EVENT_COLUMNS, rows)


async def insert_logs(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """run_logs rows, tuples in LOG_COLUMNS order."""
    await bulk.append(conn, run_logs, LOG_COLUMNS, rows)


async def insert_samples(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """run_samples rows, tuples in SAMPLE_COLUMNS order."""
    await bulk.append(conn, run_samples, SAMPLE_COLUMNS, rows)


async def stages_of(conn: AsyncConnection, run_ids: Iterable[int], *, lock: bool = False) -> list[dict[str, Any]]:
    """The stage rows of these runs. With `lock` (PostgreSQL), the rows stay locked until commit so that
    two batches of the same run merge one after the other instead of overwriting each other."""
    ids = sorted(set(run_ids))
    if not ids:
        return []
    query = select(run_stages).where(run_stages.c.run_id.in_(ids)).order_by(run_stages.c.run_id,
                                                                            run_stages.c.name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def upsert_stages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Write whole stage rows (already merged with what was stored): one multi-row
    INSERT ... ON CONFLICT (run_id, name) DO UPDATE per chunk. `started_at` is never cleared by a row
    that does not know it."""
    if not rows:
        return
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    ordered = sorted(rows, key=lambda r: (r["run_id"], r["name"]))  # a fixed lock order
    for chunk in _chunks([{column: row.get(column) for column in STAGE_COLUMNS} for row in ordered]):
        stmt = dialect_insert(run_stages).values(chunk)
        excluded = stmt.excluded
        values = {column: getattr(excluded, column) for column in STAGE_COLUMNS
                  if column not in ("run_id", "name", "started_at")}
        values["started_at"] = func.coalesce(excluded.started_at, run_stages.c.started_at)
        await conn.execute(stmt.on_conflict_do_update(index_elements=[run_stages.c.run_id, run_stages.c.name],
                                                      set_=values))


async def update_progress(conn: AsyncConnection, run_id: int, values: dict[str, Any]) -> None:
    """`progress` and/or `current_activity` of one run."""
    if values:
        await conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
