"""Tracking events (spec 1): batched inserts, per-run lists, and the runs that outside code names."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run
from taskyard.storage.tables import run_events, run_history, runs, tasks


async def list_events(conn: AsyncConnection, run_id: int, *, limit: int = 10_000) -> list[dict[str, Any]]:
    rows = (await conn.execute(
        select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.id).limit(limit)
    )).mappings().all()
    return [dict(r) for r in rows]


async def run_by_id(conn: AsyncConnection, project_id: int, run_id: int) -> Run | None:
    row = (await conn.execute(
        select(runs).where(runs.c.id == run_id, runs.c.project_id == project_id))).mappings().first()
    return Run.from_row(row) if row else None


async def run_by_uuid(conn: AsyncConnection, project_id: int, run_uuid: str) -> Run | None:
    row = (await conn.execute(
        select(runs).where(runs.c.uuid == run_uuid, runs.c.project_id == project_id))).mappings().first()
    return Run.from_row(row) if row else None


async def run_by_external_id(conn: AsyncConnection, project_id: int, external_id: str) -> Run | None:
    row = (await conn.execute(
        select(runs).where(runs.c.project_id == project_id, runs.c.external_id == external_id)
    )).mappings().first()
    return Run.from_row(row) if row else None


async def live_task_id_by_name(conn: AsyncConnection, name: str, project_id: int) -> int | None:
    value = (await conn.execute(
        select(tasks.c.id).where(tasks.c.name == name, tasks.c.project_id == project_id,
                                 tasks.c.deleted_at.is_(None)).limit(1))).scalar()
    return int(value) if value is not None else None


def _insert_or_skip(conn: AsyncConnection, table: Any, values: dict[str, Any], elements: list[str],
                    where: str) -> Any:
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=elements,
                                                                         index_where=text(where))


async def insert_task_unless_named(conn: AsyncConnection, values: dict[str, Any]) -> int | None:
    """Insert a task; None when a live task of that name appeared meanwhile (a concurrent first event)."""
    stmt = _insert_or_skip(conn, tasks, values, ["project_id", "name"], "deleted_at IS NULL")
    value = (await conn.execute(stmt.returning(tasks.c.id))).scalar_one_or_none()
    return int(value) if value is not None else None


async def insert_run_unless_known(conn: AsyncConnection, values: dict[str, Any], *, reason: str) -> int | None:
    """Insert a run named by its external id, with its first history row; None when a concurrent
    transaction created a run with that external id first."""
    stmt = _insert_or_skip(conn, runs, values, ["project_id", "external_id"], "external_id IS NOT NULL")
    run_id = (await conn.execute(stmt.returning(runs.c.id))).scalar_one_or_none()
    if run_id is None:
        return None
    await conn.execute(insert(run_history).values(run_id=run_id, attempt=values["attempt"],
                                                  status=values["status"], at=values["created_at"],
                                                  reason=reason))
    return int(run_id)


async def list_runs(conn: AsyncConnection, project_id: int, *, limit: int, offset: int) -> list[dict[str, Any]]:
    """Every run of the project, newest first: the columns the tracking run list shows."""
    rows = (await conn.execute(
        select(runs.c.id, runs.c.external_id, runs.c.task_name, runs.c.started_at, runs.c.created_at,
               runs.c.status)
        .where(runs.c.project_id == project_id)
        .order_by(runs.c.id.desc()).limit(limit).offset(offset)
    )).mappings().all()
    return [dict(r) for r in rows]
