"""Worker rows: registration, heartbeats, status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Worker
from taskyard.domain.status import WorkerStatus
from taskyard.storage.paging import PageRequest, fetch_page
from taskyard.storage.tables import workers

SORTABLE = {"created_at", "registered_at", "last_heartbeat", "hostname", "id", "status",
            "current_task_count", "cpu_usage", "memory_usage", "load_average"}

present = workers.c.deleted.is_(False)


def in_project(project_id: int | None) -> Any:
    """The project filter: None means every project (admins without a project, internal callers)."""
    return workers.c.project_id == project_id if project_id is not None else true()


# Built once: every poll and report reads its worker, and building the query per call cost more than
# running it.
_GET_WORKER = select(workers).where(workers.c.id == bindparam("worker_id"))
_GET_PRESENT_WORKER = _GET_WORKER.where(present)
_IN_PROJECT = workers.c.project_id == bindparam("project_id")
_GET_WORKER_IN_PROJECT = {True: _GET_WORKER.where(_IN_PROJECT), False: _GET_PRESENT_WORKER.where(_IN_PROJECT)}
_SEEN = update(workers).where(workers.c.id == bindparam("worker_id")).values(last_heartbeat=bindparam("seen_at"))


async def get_worker(conn: AsyncConnection, worker_id: str, *, include_deleted: bool = False,
                     project_id: int | None = None) -> Worker | None:
    """A worker; with `project_id`, only if it belongs to that project."""
    if project_id is None:
        query = _GET_WORKER if include_deleted else _GET_PRESENT_WORKER
        result = await conn.execute(query, {"worker_id": worker_id})
    else:
        result = await conn.execute(_GET_WORKER_IN_PROJECT[include_deleted],
                                    {"worker_id": worker_id, "project_id": project_id})
    row = result.mappings().first()
    return Worker.from_row(row) if row else None


async def mark_seen(conn: AsyncConnection, worker_id: str, at: datetime) -> None:
    await conn.execute(_SEEN, {"worker_id": worker_id, "seen_at": at})


async def exists(conn: AsyncConnection, worker_id: str) -> bool:
    row = (await conn.execute(select(workers.c.id).where(workers.c.id == worker_id))).first()
    return row is not None


async def project_of(conn: AsyncConnection, worker_id: str) -> int | None:
    """The project of a worker id, deleted workers included (ids are unique across projects)."""
    value = (await conn.execute(select(workers.c.project_id).where(workers.c.id == worker_id))).scalar()
    return int(value) if value is not None else None


async def insert_worker(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(workers).values(**values))


async def update_worker(conn: AsyncConnection, worker_id: str, values: dict[str, Any]) -> Worker | None:
    row = (await conn.execute(
        update(workers).where(workers.c.id == worker_id).values(**values).returning(*workers.c)
    )).mappings().first()
    return Worker.from_row(row) if row else None


async def list_workers(conn: AsyncConnection, *, project_id: int | None, status: str | None,
                       task_type: str | None, hostname: str | None, page: PageRequest) -> tuple[list[Worker], int]:
    query = select(workers).where(present, in_project(project_id))
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


async def counts(conn: AsyncConnection, *, project_id: int | None) -> dict[str, Any]:
    statement, parameters = (_COUNTS, {}) if project_id is None else (_COUNTS_IN_PROJECT, {"project_id": project_id})
    row = (await conn.execute(statement, parameters)).mappings().one()
    return {
        "total": int(row["total"] or 0), "active": int(row["active"] or 0),
        "offline": int(row["offline"] or 0), "draining": int(row["draining"] or 0),
        "average_load": round(float(row["load"]), 3) if row["load"] is not None else 0.0,
    }


# Built once (system statistics read them on every call): building them cost more than running them.
_COUNTS = select(
    func.count().label("total"),
    func.sum(case((workers.c.status == WorkerStatus.ACTIVE, 1), else_=0)).label("active"),
    func.sum(case((workers.c.status == WorkerStatus.OFFLINE, 1), else_=0)).label("offline"),
    func.sum(case((workers.c.status == WorkerStatus.DRAINING, 1), else_=0)).label("draining"),
    func.avg(case((workers.c.status != WorkerStatus.OFFLINE, workers.c.load_average))).label("load"),
).where(present)
_COUNTS_IN_PROJECT = _COUNTS.where(workers.c.project_id == bindparam("project_id"))
