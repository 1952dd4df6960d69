"""Task rows: definitions, their dependency edges, and per-task statistics."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from taskyard.domain.models import Command, Task
from taskyard.domain.status import RunStatus
from taskyard.storage.paging import Page, PageRequest, fetch_page
from taskyard.storage.tables import runs, task_dependencies, tasks

SORTABLE = {"created_at", "updated_at", "name", "priority", "id", "next_run_at", "last_run_at", "status"}

live = tasks.c.deleted_at.is_(None)


def in_project(project_id: int | None) -> Any:
    """The project filter: None means every project (admins without a project, internal callers)."""
    return tasks.c.project_id == project_id if project_id is not None else true()


async def insert_task(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(insert(tasks).values(**values).returning(tasks.c.id))
    return int(result.scalar_one())


# A task with its dependency ids in one statement, built once: triggering reads a task per run, and
# building the query (and its cache key) each time cost more than the database spent answering it.
class _IdList(FunctionElement[str]):
    """The ids of a group as one comma-separated text (group_concat on SQLite, string_agg on PostgreSQL)."""

    name = "id_list"
    inherit_cache = True


@compiles(_IdList)
def _group_concat(element: Any, compiler: Any, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)})"


@compiles(_IdList, "postgresql")
def _string_agg(element: Any, compiler: Any, **kw: Any) -> str:
    return f"string_agg(CAST({compiler.process(element.clauses, **kw)} AS TEXT), ',')"


_DEPENDENCY_IDS = (select(_IdList(task_dependencies.c.depends_on_id))
                   .where(task_dependencies.c.task_id == tasks.c.id).scalar_subquery())
_GET_TASK = select(tasks, _DEPENDENCY_IDS.label("dependency_ids")).where(tasks.c.id == bindparam("task_id"), live)
_GET_TASK_IN_PROJECT = _GET_TASK.where(tasks.c.project_id == bindparam("project_id"))


async def get_task(conn: AsyncConnection, task_id: int, *, project_id: int | None = None) -> Task | None:
    """A live task; with `project_id`, only if it belongs to that project."""
    if project_id is None:
        result = await conn.execute(_GET_TASK, {"task_id": task_id})
    else:
        result = await conn.execute(_GET_TASK_IN_PROJECT, {"task_id": task_id, "project_id": project_id})
    row = result.mappings().first()
    if row is None:
        return None
    ids = row["dependency_ids"]
    return Task.from_row({**row, "dependencies": sorted(int(i) for i in ids.split(",")) if ids else []})


async def find_ids_by_name(conn: AsyncConnection, names: list[str], *, project_id: int | None) -> dict[str, int]:
    if not names:
        return {}
    rows = await conn.execute(select(tasks.c.name, tasks.c.id).where(tasks.c.name.in_(names), live,
                                                                     in_project(project_id)))
    return {name: int(task_id) for name, task_id in rows.all()}


async def existing_ids(conn: AsyncConnection, ids: list[int], *, project_id: int | None) -> set[int]:
    if not ids:
        return set()
    rows = await conn.execute(select(tasks.c.id).where(tasks.c.id.in_(ids), live, in_project(project_id)))
    return {int(r) for r in rows.scalars()}


async def name_taken(conn: AsyncConnection, name: str, project_id: int, except_id: int | None = None) -> bool:
    """Task names are unique within a project."""
    query = select(tasks.c.id).where(tasks.c.name == name, tasks.c.project_id == project_id, live)
    if except_id is not None:
        query = query.where(tasks.c.id != except_id)
    return (await conn.execute(query.limit(1))).first() is not None


async def update_task(conn: AsyncConnection, task_id: int, values: dict[str, Any]) -> None:
    await conn.execute(update(tasks).where(tasks.c.id == task_id, live).values(**values))


# How stale `last_run_at` may get under a burst of runs of one task.
LAST_RUN_RESOLUTION = timedelta(seconds=1)


async def touch_last_run(conn: AsyncConnection, task_id: int, now: datetime) -> None:
    """Move the task's `last_run_at` to `now`, unless it is already within LAST_RUN_RESOLUTION of it.

    Every run of a task used to update the task's row, so a burst of triggers of one task queued up
    behind that row's lock (and each one's commit) on PostgreSQL: ~100 triggers/s whatever the load.
    A row that does not match the condition is not locked."""
    await conn.execute(update(tasks).where(
        tasks.c.id == task_id, live,
        or_(tasks.c.last_run_at.is_(None), tasks.c.last_run_at <= now - LAST_RUN_RESOLUTION),
    ).values(last_run_at=now))


async def dependencies_of(conn: AsyncConnection, task_ids: list[int]) -> dict[int, list[int]]:
    rows = await conn.execute(
        select(task_dependencies.c.task_id, task_dependencies.c.depends_on_id)
        .where(task_dependencies.c.task_id.in_(task_ids))
        .order_by(task_dependencies.c.depends_on_id)
    )
    found: dict[int, list[int]] = defaultdict(list)
    for task_id, dep in rows.all():
        found[int(task_id)].append(int(dep))
    return found


async def all_dependency_edges(conn: AsyncConnection) -> dict[int, list[int]]:
    rows = await conn.execute(
        select(task_dependencies.c.task_id, task_dependencies.c.depends_on_id)
        .join(tasks, tasks.c.id == task_dependencies.c.task_id).where(live)
    )
    edges: dict[int, list[int]] = defaultdict(list)
    for task_id, dep in rows.all():
        edges[int(task_id)].append(int(dep))
    return edges


async def set_dependencies(conn: AsyncConnection, task_id: int, depends_on: list[int]) -> None:
    await conn.execute(delete(task_dependencies).where(task_dependencies.c.task_id == task_id))
    if depends_on:
        await conn.execute(insert(task_dependencies),
                           [{"task_id": task_id, "depends_on_id": d} for d in depends_on])


async def drop_edges_to(conn: AsyncConnection, task_id: int) -> None:
    await conn.execute(delete(task_dependencies).where(or_(task_dependencies.c.depends_on_id == task_id,
                                                           task_dependencies.c.task_id == task_id)))


async def list_tasks(conn: AsyncConnection, *, project_id: int | None, status: str | None, task_type: str | None,
                     priority: str | None, search: str | None,
                     page: PageRequest) -> tuple[list[Task], int]:
    query = select(tasks).where(live, in_project(project_id))
    if status:
        query = query.where(tasks.c.status == status)
    if task_type:
        query = query.where(tasks.c.task_type == task_type)
    if priority:
        query = query.where(tasks.c.priority == priority)
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        query = query.where(or_(func.lower(tasks.c.name).like(pattern, escape="\\"),
                                func.lower(tasks.c.description).like(pattern, escape="\\"),
                                func.lower(tasks.c.command).like(pattern, escape="\\")))
    # Priority sorts by rank (low < normal < high < critical), not alphabetically.
    sort_column: Any = (case({"low": 0, "normal": 1, "high": 2, "critical": 3}, value=tasks.c.priority,
                             else_=1) if page.sort == "priority" else tasks.c[page.sort])
    result: Page = await fetch_page(conn, query, sort_column, tasks.c.id, page)
    rows = result.rows
    deps = await dependencies_of(conn, [r["id"] for r in rows]) if rows else {}
    return [Task.from_row({**r, "dependencies": deps.get(r["id"], [])}) for r in rows], result.total


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def recent_average_execution_time(conn: AsyncConnection, task_id: int, sample: int = 50,
                                       ) -> tuple[float | None, int]:
    """Mean execution time of the task's newest `sample` completed runs, and how many there were: an index
    range scan (ix_runs_task_status_completed_at), so triggering stays as cheap with a million stored runs
    as with ten."""
    recent = (select(runs.c.execution_time.label("seconds"))
              .where(runs.c.task_id == task_id, runs.c.status == RunStatus.COMPLETED)
              .order_by(runs.c.completed_at.desc()).limit(sample).subquery())
    row = (await conn.execute(select(func.avg(recent.c.seconds), func.count(recent.c.seconds)))).one()
    return (round(float(row[0]), 3) if row[0] is not None else None), int(row[1] or 0)


async def counts(conn: AsyncConnection, *, project_id: int | None) -> dict[str, int]:
    statement, parameters = (_COUNTS, {}) if project_id is None else (_COUNTS_IN_PROJECT, {"project_id": project_id})
    row = (await conn.execute(statement, parameters)).mappings().one()
    return {k: int(v or 0) for k, v in row.items()}


# Built once (system statistics read them on every call): building them cost more than running them.
_COUNTS = select(
    func.count().label("total"),
    func.sum(case((tasks.c.status == "active", 1), else_=0)).label("active"),
    func.sum(case((tasks.c.status == "paused", 1), else_=0)).label("paused"),
    func.sum(case((tasks.c.last_run_status == RunStatus.COMPLETED, 1), else_=0)).label("completed"),
    func.sum(case((tasks.c.last_run_status == RunStatus.FAILED, 1), else_=0)).label("failed"),
).where(live)
_COUNTS_IN_PROJECT = _COUNTS.where(tasks.c.project_id == bindparam("project_id"))


_RECORD_OUTCOME = update(tasks).where(tasks.c.id == bindparam("task_id"))


async def record_outcome(conn: AsyncConnection, task_id: int, status: RunStatus, at: datetime) -> None:
    values: dict[str, Any] = {"task_id": task_id, "last_run_status": status.value}
    if status is RunStatus.COMPLETED:
        values["last_success_at"] = at
    await conn.execute(_RECORD_OUTCOME, values)


_COMMANDS = select(tasks.c.id, tasks.c.command, tasks.c.arguments, tasks.c.metadata).where(
    tasks.c.id.in_(bindparam("task_ids", expanding=True)))


async def commands_of(conn: AsyncConnection, task_ids: list[int]) -> dict[int, Command]:
    """What claimed runs of these tasks execute, deleted tasks included (a claimed run still needs it)."""
    if not task_ids:
        return {}
    rows = (await conn.execute(_COMMANDS, {"task_ids": task_ids})).all()
    return {int(r[0]): Command(r[1], list(r[2]), dict(r[3])) for r in rows}
