"""Worker rows: registration, heartbeats, status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Worker
from taskyard.domain.status import WorkerStatus
from taskyard.storage.paging import PageRequest, fetch_page
from taskyard.storage.tables import workers

SORTABLE = {"created_at", "registered_at", "last_heartbeat", "hostname", "id", "status",
            "current_task_count", "cpu_usage", "memory_usage", "load_average"}

present = workers.c.deleted.is_(False)


async def get_worker(conn: AsyncConnection, worker_id: str, *, include_deleted: bool = False) -> Worker | None:
    query = select(workers).where(workers.c.id == worker_id)
    if not include_deleted:
        query = query.where(present)
    row = (await conn.execute(query)).mappings().first()
    return Worker.from_row(row) if row else None


async def exists(conn: AsyncConnection, worker_id: str) -> bool:
    row = (await conn.execute(select(workers.c.id).where(workers.c.id == worker_id))).first()
    return row is not None


async def insert_worker(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(workers).values(**values))


async def update_worker(conn: AsyncConnection, worker_id: str, values: dict[str, Any]) -> Worker | None:
    row = (await conn.execute(
        update(workers).where(workers.c.id == worker_id).values(**values).returning(*workers.c)
    )).mappings().first()
    return Worker.from_row(row) if row else None


async def list_workers(conn: AsyncConnection, *, status: str | None, task_type: str | None,
                       hostname: str | None, page: PageRequest) -> tuple[list[Worker], int]:
    query = select(workers).where(present)
    if status:
        query = query.where(workers.c.status == status)
    if hostname:
        query = query.where(workers.c.hostname == hostname)
    if task_type:
        # JSON containment differs per database; the worker list is small, so filter on a text match
        # of the quoted element and confirm in Python.
        query = query.where(func.cast(workers.c.task_types, type_=workers.c.hostname.type)
                            .like(f'%"{task_type}"%'))
    result = await fetch_page(conn, query, workers.c[page.sort], workers.c.id, page)
    return [Worker.from_row(r) for r in result.rows], result.total


async def lapsed(conn: AsyncConnection, before: datetime) -> list[Worker]:
    rows = (await conn.execute(
        select(workers).where(present, workers.c.status != WorkerStatus.OFFLINE,
                              workers.c.last_heartbeat < before)
    )).mappings().all()
    return [Worker.from_row(r) for r in rows]


async def counts(conn: AsyncConnection) -> dict[str, Any]:
    row = (await conn.execute(select(
        func.count().label("total"),
        func.sum(case((workers.c.status == WorkerStatus.ACTIVE, 1), else_=0)).label("active"),
        func.sum(case((workers.c.status == WorkerStatus.OFFLINE, 1), else_=0)).label("offline"),
        func.sum(case((workers.c.status == WorkerStatus.DRAINING, 1), else_=0)).label("draining"),
        func.avg(case((workers.c.status != WorkerStatus.OFFLINE, workers.c.load_average))).label("load"),
    ).where(present))).mappings().one()
    return {
        "total": int(row["total"] or 0), "active": int(row["active"] or 0),
        "offline": int(row["offline"] or 0), "draining": int(row["draining"] or 0),
        "average_load": round(float(row["load"]), 3) if row["load"] is not None else 0.0,
    }
