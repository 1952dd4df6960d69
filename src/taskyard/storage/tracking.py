"""What tracking events turn into besides their run_events row: run progress, stages, structured log
lines and metric samples. Every write here is batched: multi-row inserts, one multi-row upsert for the
stages a batch touches, one UPDATE per run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.storage.tables import run_logs, run_samples, run_stages, runs

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


async def insert_rows(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Multi-row INSERT ... VALUES (...), (...) of rows with the same keys.

    Executed as an executemany with RETURNING, which SQLAlchemy sends as multi-row INSERTs of up to
    1000 rows each ("insertmanyvalues") from one cached statement: compiling a literal
    `insert().values([...])` of 1000 rows costs several times more than the database's work.
    """
    if rows:
        await conn.execute(insert(table).returning(table.c.id), rows)


async def insert_logs(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """run_logs rows (run_id, attempt, timestamp, level, stream, message, component, stage, details)."""
    await insert_rows(conn, run_logs, rows)


async def insert_samples(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """run_samples rows: run_id, name, value, unit, source, timestamp."""
    await insert_rows(conn, run_samples, rows)


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
