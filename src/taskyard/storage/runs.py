"""Run rows: insertion with their history, the atomic claim, guarded status changes, leases."""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, bindparam, case, delete, exists, func, insert, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Command, Run
from taskyard.domain.status import ACTIVE_RUN_STATUSES, RunStatus, WorkerStatus
from taskyard.storage import tallies
from taskyard.storage import tasks as task_rows
from taskyard.storage.paging import PageRequest, fetch_page
from taskyard.storage.tables import run_history, run_logs, run_waits, runs, tasks, workers
from taskyard.storage.types import UTCDateTime
from taskyard.storage.wakeup import notify_column, request_wake, wake_on_commit

SORTABLE = {"created_at", "started_at", "completed_at", "id", "status", "priority", "execution_time",
            "task_id"}


def in_project(project_id: int | None) -> Any:
    """The project filter: None means every project (admins without a project, internal callers)."""
    return runs.c.project_id == project_id if project_id is not None else true()


# Built once: constructing an INSERT of 20 values (and its cache key) per run cost more than running it.
_INSERT_RUN = insert(runs).returning(*runs.c)
_INSERT_SLOT_RUN = {
    "postgresql": pg_insert(runs).on_conflict_do_nothing(index_elements=["task_id", "scheduled_for"])
    .returning(*runs.c),
    "sqlite": sqlite_insert(runs).on_conflict_do_nothing(index_elements=["task_id", "scheduled_for"])
    .returning(*runs.c),
}
_INSERT_HISTORY = insert(run_history)
_HISTORY_COLUMNS = ["run_id", "attempt", "status", "at", "worker_id", "reason"]


def _with_history(changed: Any, at: str) -> Any:
    """PostgreSQL: a statement that writes runs (INSERT or UPDATE … RETURNING) and, in the same round trip,
    the history row of each run it wrote, in the run's new status at its column `at`; the runs come back
    as its rows."""
    written = changed.cte("written")
    history = insert(run_history).from_select(_HISTORY_COLUMNS, select(
        written.c.id, written.c.attempt, written.c.status, written.c[at], written.c.worker_id,
        bindparam("b_reason", type_=run_history.c.reason.type)))
    return select(written).add_cte(history.cte("written_history"))


@functools.cache
def _postgres_insert_run(columns: tuple[str, ...], on_conflict_skip: bool, wake: bool) -> Any:
    """The run and its history row in one statement (with its NOTIFY when it is claimable), built once per
    set of columns given."""
    values = {runs.c[name]: bindparam(name, type_=runs.c[name].type) for name in columns}
    inserted: Any = insert(runs).values(values)
    if on_conflict_skip:
        inserted = pg_insert(runs).values(values).on_conflict_do_nothing(index_elements=["task_id", "scheduled_for"])
    statement = _with_history(inserted.returning(*runs.c), "created_at")
    return statement.add_columns(notify_column()) if wake else statement


async def insert_run(conn: AsyncConnection, values: dict[str, Any], *, reason: str | None = None,
                     on_conflict_skip: bool = False, wake: bool = False) -> Run | None:
    """Insert one run and its first history row; the stored run comes back from the INSERT itself (no
    read after it). With on_conflict_skip a second insert of the same cron slot returns None instead of
    failing, so two schedulers can never fire a slot twice. With `wake`, pollers are woken at commit. On
    PostgreSQL all of it is one round trip."""
    if conn.dialect.name == "postgresql":
        stmt = _postgres_insert_run(tuple(sorted(values)), on_conflict_skip, wake)
        params = {**values, "b_reason": reason}
        if wake:
            params["b_origin"] = wake_on_commit(conn)
        row = (await conn.execute(stmt, params)).mappings().first()
        return Run.from_row(row) if row is not None else None
    if wake:
        wake_on_commit(conn)
    stmt = _INSERT_SLOT_RUN[conn.dialect.name] if on_conflict_skip else _INSERT_RUN
    row = (await conn.execute(stmt, values)).mappings().first()
    if row is None:
        return None
    await conn.execute(_INSERT_HISTORY, {"run_id": row["id"], "attempt": 0, "status": values["status"],
                                         "at": values["created_at"], "worker_id": None, "reason": reason})
    return Run.from_row(row)


async def get_run(conn: AsyncConnection, run_id: int, *, project_id: int | None = None) -> Run | None:
    """A run; with `project_id`, only if it belongs to that project."""
    row = (await conn.execute(select(runs).where(runs.c.id == run_id, in_project(project_id)))).mappings().first()
    return Run.from_row(row) if row else None


_GET_RUNS = select(runs).where(runs.c.id.in_(bindparam("run_ids", expanding=True)))
_GET_RUNS_IN_PROJECT = _GET_RUNS.where(runs.c.project_id == bindparam("project_id"))


async def get_runs(conn: AsyncConnection, run_ids: list[int], *, project_id: int | None = None) -> list[Run]:
    if not run_ids:
        return []
    if project_id is None:
        result = await conn.execute(_GET_RUNS, {"run_ids": run_ids})
    else:
        result = await conn.execute(_GET_RUNS_IN_PROJECT, {"run_ids": run_ids, "project_id": project_id})
    return [Run.from_row(r) for r in result.mappings().all()]


async def latest_active_run(conn: AsyncConnection, task_id: int) -> Run | None:
    """The newest in-flight run of a task, locked on PostgreSQL: a run about to wait on it must not
    interleave with its finishing, or the finisher could miss the new wait and strand the waiter."""
    query = (select(runs).where(runs.c.task_id == task_id, runs.c.status.in_(list(ACTIVE_RUN_STATUSES)))
             .order_by(runs.c.id.desc()).limit(1))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().first()
    return Run.from_row(row) if row else None


async def active_runs_of_task(conn: AsyncConnection, task_id: int) -> list[Run]:
    rows = (await conn.execute(
        select(runs).where(runs.c.task_id == task_id, runs.c.status.in_(list(ACTIVE_RUN_STATUSES)))
    )).mappings().all()
    return [Run.from_row(r) for r in rows]


# A run list filtered by worker or dates counts its matches up to here; past it the page gives a lower
# bound (see paging.py). Each match counted is a row read, so a higher limit makes those lists slower as
# runs pile up.
TOTAL_LIMIT = 1_000


def _order(sort: str) -> tuple[Any, list[Any]]:
    """The sort column and what orders equal values: the columns of the index that serves the sort
    (0008), so a page is read in index order instead of sorting every run."""
    if sort == "id":
        return runs.c.id, []
    if sort in {"status", "priority", "task_id"}:  # few distinct values: newest first among equals
        return runs.c.priority_rank if sort == "priority" else runs.c[sort], [runs.c.created_at, runs.c.id]
    return runs.c[sort], [runs.c.id]


async def list_runs(conn: AsyncConnection, *, project_id: int | None, task_id: int | None,
                    status: list[str] | None, worker_id: str | None, start_date: date | None,
                    end_date: date | None, page: PageRequest) -> tuple[list[Run], int, bool]:
    """A page of runs, their total and whether it is exact. Filtered by project, task and status only,
    the total comes from the tallies, exact; with a worker or dates it is counted up to TOTAL_LIMIT."""
    query = select(runs).where(in_project(project_id))
    if task_id is not None:
        query = query.where(runs.c.task_id == task_id)
    if status:
        query = query.where(runs.c.status.in_(status))
    if worker_id:
        query = query.where(runs.c.worker_id == worker_id)
    if start_date:
        query = query.where(runs.c.created_at >= datetime.combine(start_date, datetime.min.time()))
    if end_date:
        query = query.where(runs.c.created_at < datetime.combine(end_date + timedelta(days=1),
                                                                 datetime.min.time()))
    total = None
    if not (worker_id or start_date or end_date):
        found = await tallies.figures(conn, project_id=project_id, task_id=task_id, statuses=status or None)
        total = sum(f.runs for f in found.values())
    sort_column, tiebreak = _order(page.sort)
    result = await fetch_page(conn, query, sort_column, tiebreak, page, total=total, count_limit=TOTAL_LIMIT)
    return [Run.from_row(r) for r in result.rows], result.total, result.exact


def _status_change(guard_attempt: bool, guard_worker: bool) -> Any:
    """The guarded UPDATE of `change_status`, built once per kind of guard; the SET clause comes from the
    parameters' column names."""
    guard = [runs.c.id == bindparam("b_run_id"), runs.c.status.in_(bindparam("b_expected", expanding=True))]
    if guard_attempt:
        guard.append(runs.c.attempt == bindparam("b_attempt"))
    if guard_worker:
        guard.append(runs.c.worker_id == bindparam("b_worker_id"))
    return update(runs).where(*guard).returning(*runs.c)


_STATUS_CHANGES = {(a, w): _status_change(a, w) for a in (False, True) for w in (False, True)}


@functools.cache
def _postgres_status_change(columns: tuple[str, ...], guard_attempt: bool, guard_worker: bool) -> Any:
    """PostgreSQL: the guarded UPDATE and the history row in one round trip, built once per set of columns
    changed (a statement embedded in a CTE cannot take its SET clause from the parameters)."""
    changed = _STATUS_CHANGES[(guard_attempt, guard_worker)].values(
        {runs.c[name]: bindparam(name, type_=runs.c[name].type) for name in columns})
    return _with_history(changed, "updated_at")


async def change_status(conn: AsyncConnection, run_id: int, *, expected: frozenset[RunStatus] | set[RunStatus],
                        values: dict[str, Any], at: datetime, reason: str | None = None,
                        worker_id: str | None = None, attempt: int | None = None) -> Run | None:
    """Move a run only if it is still in one of `expected` (and, when given, held by that attempt).
    Returns the changed run, or None when someone else moved it first."""
    params = {**values, "updated_at": at, "b_run_id": run_id, "b_expected": [s.value for s in expected]}
    if attempt is not None:
        params["b_attempt"] = attempt
    if worker_id is not None:
        params["b_worker_id"] = worker_id
    if conn.dialect.name == "postgresql":
        stmt = _postgres_status_change(tuple(sorted({*values, "updated_at"})), attempt is not None,
                                       worker_id is not None)
        row = (await conn.execute(stmt, {**params, "b_reason": reason})).mappings().first()
        return Run.from_row(row) if row is not None else None
    stmt = _STATUS_CHANGES[(attempt is not None, worker_id is not None)]
    row = (await conn.execute(stmt, params)).mappings().first()
    if row is None:
        return None
    run = Run.from_row(row)
    await conn.execute(_INSERT_HISTORY, {"run_id": run_id, "attempt": run.attempt, "status": run.status,
                                         "at": at, "worker_id": run.worker_id, "reason": reason})
    return run


def _claim_statement(dialect: str) -> Any:
    """The claim, built once per dialect: take up to `b_limit` claimable runs, highest priority first."""
    candidates = (
        select(runs.c.id)
        .where(runs.c.status == RunStatus.QUEUED, runs.c.available_at <= bindparam("b_now", type_=UTCDateTime()),
               runs.c.task_type.in_(bindparam("b_task_types", expanding=True)),
               runs.c.project_id == bindparam("b_project_id"))
        .order_by(runs.c.priority_rank.desc(), runs.c.id.asc())
        .limit(bindparam("b_limit", type_=Integer()))
    )
    taken: Any = [runs.c.id.in_(candidates.scalar_subquery()), runs.c.status == RunStatus.QUEUED]
    if dialect == "postgresql":
        # A plain IN (subquery) may be planned as a nested-loop semi join that rescans the locking
        # subquery per row, each rescan taking a fresh LIMIT of unlocked rows: the limit is lost.
        # A MATERIALIZED CTE is evaluated exactly once.
        locked = candidates.with_for_update(skip_locked=True).cte("claimable").prefix_with("MATERIALIZED")
        # The rows it locked were queued when locked and stay so until this transaction ends, so the
        # update finds them by id alone: a second test of their status is one a planner misled by old
        # statistics answers by reading every queued run through ix_runs_status_created_at.
        taken = [runs.c.id.in_(select(locked.c.id).scalar_subquery())]
    # (SQLite runs this inside BEGIN IMMEDIATE: no other writer can interleave.)
    return (
        update(runs)
        .where(*taken)
        .values(status=RunStatus.RUNNING, worker_id=bindparam("b_worker_id"),
                worker_hostname=bindparam("b_hostname"), attempt=runs.c.attempt + 1,
                lease_expires_at=bindparam("b_lease_until", type_=UTCDateTime()),
                started_at=bindparam("b_now", type_=UTCDateTime()), updated_at=bindparam("b_now", type_=UTCDateTime()))
        .returning(*runs.c)
    )


def _postgres_claim() -> Any:
    """The claim with its history rows and each run's command, in one statement."""
    written = _claim_statement("postgresql").cte("written")
    history = insert(run_history).from_select(_HISTORY_COLUMNS, select(
        written.c.id, written.c.attempt, written.c.status, written.c.started_at, written.c.worker_id,
        bindparam("b_reason", type_=run_history.c.reason.type)))
    return (select(written, tasks.c.command.label("c_command"), tasks.c.arguments.label("c_arguments"),
                   tasks.c.metadata.label("c_metadata"))
            .select_from(written.join(tasks, tasks.c.id == written.c.task_id))
            .add_cte(history.cte("written_history")))


_CLAIMS = {"postgresql": _postgres_claim(), "sqlite": _claim_statement("sqlite")}


async def claim(conn: AsyncConnection, *, project_id: int, worker_id: str, hostname: str, task_types: list[str],
                limit: int, now: datetime, lease_until: datetime) -> tuple[list[Run], dict[int, Command]]:
    """Atomically take up to `limit` claimable runs of one project: highest priority first, then oldest.
    With them, what each of their tasks executes (by task id)."""
    if limit <= 0 or not task_types:
        return [], {}
    if conn.dialect.name == "postgresql":
        # The claim must walk ix_runs_claim in order and stop after `limit` rows. Where the statistics
        # say queued runs are rare (a new table, or a burst of triggers on a big one, both long before
        # autovacuum analyzes again), the planner instead fetches every queued run and sorts them: each
        # claim then costs time in proportion to the queue, 5 ms at 8,000 queued runs against 0.6 ms.
        # Without a sort to choose, it takes the index. Only this transaction is affected.
        await conn.exec_driver_sql("SET LOCAL enable_sort = off")
    rows = (await conn.execute(_CLAIMS[conn.dialect.name], {
        "b_now": now, "b_task_types": task_types, "b_project_id": project_id, "b_limit": limit,
        "b_worker_id": worker_id, "b_hostname": hostname, "b_lease_until": lease_until, "b_reason": None,
    })).mappings().all()
    claimed = sorted((Run.from_row(r) for r in rows), key=lambda r: (-r.priority.rank, r.id))
    if conn.dialect.name == "postgresql":
        return claimed, {int(r["task_id"]): Command(r["c_command"], list(r["c_arguments"]), dict(r["c_metadata"]))
                         for r in rows}
    if claimed:
        await conn.execute(_INSERT_HISTORY, [
            {"run_id": r.id, "attempt": r.attempt, "status": RunStatus.RUNNING, "at": now,
             "worker_id": worker_id, "reason": None} for r in claimed])
    return claimed, await task_rows.commands_of(conn, sorted({r.task_id for r in claimed}))


def _hand_over_statement() -> Any:
    """One queued run to a worker, as its claim would take it, if the worker is still active: a poll
    waiting in memory may belong to a worker that has since been drained or removed."""
    active = exists().where(workers.c.id == bindparam("b_worker_id"), workers.c.status == WorkerStatus.ACTIVE)
    return (
        update(runs)
        .where(runs.c.id == bindparam("b_run_id"), runs.c.status == RunStatus.QUEUED, active)
        .values(status=RunStatus.RUNNING, worker_id=bindparam("b_worker_id"),
                worker_hostname=bindparam("b_hostname"), attempt=runs.c.attempt + 1,
                lease_expires_at=bindparam("b_lease_until", type_=UTCDateTime()),
                started_at=bindparam("b_now", type_=UTCDateTime()), updated_at=bindparam("b_now", type_=UTCDateTime()))
        .returning(*runs.c)
    )


_HAND_OVERS = {"postgresql": _with_history(_hand_over_statement(), "started_at"), "sqlite": _hand_over_statement()}


async def hand_over(conn: AsyncConnection, run_id: int, *, worker_id: str, hostname: str, now: datetime,
                    lease_until: datetime) -> Run | None:
    """Claim this queued run for a waiting worker (direct dispatch); None if the run or worker moved."""
    row = (await conn.execute(_HAND_OVERS[conn.dialect.name], {
        "b_run_id": run_id, "b_worker_id": worker_id, "b_hostname": hostname, "b_now": now,
        "b_lease_until": lease_until, "b_reason": None})).mappings().first()
    if row is None:
        return None
    run = Run.from_row(row)
    if conn.dialect.name != "postgresql":
        await conn.execute(_INSERT_HISTORY, {"run_id": run.id, "attempt": run.attempt, "status": run.status,
                                             "at": now, "worker_id": worker_id, "reason": None})
    return run


async def runs_of_worker(conn: AsyncConnection, worker_id: str) -> list[Run]:
    rows = (await conn.execute(
        select(runs).where(runs.c.worker_id == worker_id, runs.c.status == RunStatus.RUNNING)
        .order_by(runs.c.id)
    )).mappings().all()
    return [Run.from_row(r) for r in rows]


_HELD = select(runs.c.id).where(runs.c.id.in_(bindparam("run_ids", expanding=True)),
                                runs.c.worker_id == bindparam("b_worker_id"), runs.c.status == RunStatus.RUNNING)


async def not_held(conn: AsyncConnection, worker_id: str, run_ids: list[int]) -> list[int]:
    """Of the runs a worker says it is running, those it no longer holds (aborted, reassigned)."""
    if not run_ids:
        return []
    held = set((await conn.execute(_HELD, {"run_ids": run_ids, "b_worker_id": worker_id})).scalars())
    return [r for r in run_ids if r not in held]


async def renew_leases(conn: AsyncConnection, worker_id: str, run_ids: list[int], *, now: datetime,
                       lease_until: datetime, claim_grace: timedelta) -> None:
    """Extend the leases the worker still reports, and those claimed so recently that the worker may
    not have seen the claim's answer yet. Anything else it no longer mentions is left to lapse.

    On PostgreSQL rows locked by another transaction are skipped, never waited for: that transaction is
    finishing or requeueing the run (a report, an abort, the reaper), and waiting would lock rows in
    an order of its own, which deadlocked against a concurrent report of the same worker."""
    held = select(runs.c.id).where(
        runs.c.worker_id == worker_id, runs.c.status == RunStatus.RUNNING,
        or_(runs.c.id.in_(run_ids or [-1]), runs.c.started_at >= now - claim_grace))
    if conn.dialect.name == "postgresql":
        held = held.with_for_update(skip_locked=True)
    await conn.execute(
        update(runs)
        .where(runs.c.id.in_(held.scalar_subquery()), runs.c.worker_id == worker_id,
               runs.c.status == RunStatus.RUNNING)
        .values(lease_expires_at=lease_until)
    )


async def expired_leases(conn: AsyncConnection, now: datetime, limit: int = 500) -> list[Run]:
    rows = (await conn.execute(
        select(runs).where(runs.c.status == RunStatus.RUNNING, runs.c.lease_expires_at < now)
        .order_by(runs.c.lease_expires_at).limit(limit)
    )).mappings().all()
    return [Run.from_row(r) for r in rows]


async def add_waits(conn: AsyncConnection, run_id: int, dependency_run_ids: list[int]) -> None:
    if dependency_run_ids:
        await conn.execute(insert(run_waits), [{"run_id": run_id, "dependency_run_id": d}
                                               for d in sorted(set(dependency_run_ids))])


async def waiters_of(conn: AsyncConnection, dependency_run_id: int) -> list[int]:
    rows = await conn.execute(select(run_waits.c.run_id).where(run_waits.c.dependency_run_id == dependency_run_id))
    return [int(r) for r in rows.scalars()]


async def release_wait(conn: AsyncConnection, dependency_run_id: int) -> list[int]:
    """Drop waits on a finished dependency; return waiting runs that now wait on nothing."""
    waiting = await waiters_of(conn, dependency_run_id)
    if not waiting:
        return []
    await conn.execute(delete(run_waits).where(run_waits.c.dependency_run_id == dependency_run_id))
    still = set((await conn.execute(
        select(run_waits.c.run_id).where(run_waits.c.run_id.in_(waiting))
    )).scalars())
    return [r for r in waiting if r not in still]


async def waits_of(conn: AsyncConnection, run_id: int) -> list[int]:
    rows = await conn.execute(select(run_waits.c.dependency_run_id).where(run_waits.c.run_id == run_id))
    return [int(r) for r in rows.scalars()]


async def clear_waits(conn: AsyncConnection, run_id: int) -> None:
    await conn.execute(delete(run_waits).where(run_waits.c.run_id == run_id))


async def history(conn: AsyncConnection, run_id: int) -> list[dict[str, Any]]:
    rows = (await conn.execute(
        select(run_history).where(run_history.c.run_id == run_id).order_by(run_history.c.id)
    )).mappings().all()
    return [dict(r) for r in rows]


_IN_WAITS = select(run_waits.c.run_id, run_waits.c.dependency_run_id).where(
    or_(run_waits.c.run_id.in_(bindparam("run_ids", expanding=True)),
        run_waits.c.dependency_run_id.in_(bindparam("run_ids", expanding=True))))


async def runs_in_waits(conn: AsyncConnection, run_ids: list[int]) -> set[int]:
    """Of these runs, those that wait on another run or that another run waits on."""
    if not run_ids:
        return set()
    rows = await conn.execute(_IN_WAITS, {"run_ids": run_ids})
    wanted = set(run_ids)
    return {int(x) for pair in rows.all() for x in pair if int(x) in wanted}


async def logs(conn: AsyncConnection, run_id: int, *, after_id: int = 0, limit: int = 1000,
               tail: bool = False) -> list[dict[str, Any]]:
    query = select(run_logs).where(run_logs.c.run_id == run_id, run_logs.c.id > after_id)
    if tail:
        rows = (await conn.execute(query.order_by(run_logs.c.id.desc()).limit(limit))).mappings().all()
        return [dict(r) for r in reversed(rows)]
    rows = (await conn.execute(query.order_by(run_logs.c.id).limit(limit))).mappings().all()
    return [dict(r) for r in rows]


async def log_count(conn: AsyncConnection, run_id: int) -> int:
    return int((await conn.execute(select(func.count()).where(run_logs.c.run_id == run_id))).scalar_one())


async def queue_depth(conn: AsyncConnection, now: datetime, *, project_id: int | None) -> int:
    statement, parameters = ((_QUEUE_DEPTH, {"now": now}) if project_id is None
                             else (_QUEUE_DEPTH_IN_PROJECT, {"now": now, "project_id": project_id}))
    return int((await conn.execute(statement, parameters)).scalar_one())


# Built once, like the statements below: health and statistics read them on every call, and building
# them (and their cache keys) cost more than running them.
_QUEUE_DEPTH = select(func.count()).where(runs.c.status == RunStatus.QUEUED, runs.c.available_at <= bindparam("now"))
_QUEUE_DEPTH_IN_PROJECT = _QUEUE_DEPTH.where(runs.c.project_id == bindparam("project_id"))


async def finished_since(conn: AsyncConnection, since: datetime, *, project_id: int | None) -> dict[str, Any]:
    statement, parameters = ((_FINISHED_SINCE, {"since": since}) if project_id is None
                             else (_FINISHED_SINCE_IN_PROJECT, {"since": since, "project_id": project_id}))
    row = (await conn.execute(statement, parameters)).mappings().one()
    return {"finished": int(row["finished"] or 0), "completed": int(row["completed"] or 0)}


# Only final runs have a completed_at. The status test stays out of WHERE: there it made SQLite walk
# (status, created_at) through every finished run instead of the recent end of completed_at.
_FINISHED_SINCE = select(
    func.count(case((runs.c.status.in_([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED]), 1)))
    .label("finished"),
    func.sum(case((runs.c.status == RunStatus.COMPLETED, 1), else_=0)).label("completed"),
).where(runs.c.completed_at >= bindparam("since"))
_FINISHED_SINCE_IN_PROJECT = _FINISHED_SINCE.where(runs.c.project_id == bindparam("project_id"))


async def worker_statistics(conn: AsyncConnection, worker_id: str) -> dict[str, Any]:
    row = (await conn.execute(select(
        func.count().label("total"),
        func.sum(case((runs.c.status == RunStatus.COMPLETED, 1), else_=0)).label("ok"),
        func.sum(case((runs.c.status == RunStatus.FAILED, 1), else_=0)).label("failed"),
        func.avg(case((runs.c.status == RunStatus.COMPLETED, runs.c.execution_time))).label("avg"),
    ).where(runs.c.worker_id == worker_id,
            runs.c.status.in_([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED])))).mappings().one()
    return {
        "total_tasks_executed": int(row["total"] or 0),
        "successful_tasks": int(row["ok"] or 0),
        "failed_tasks": int(row["failed"] or 0),
        "average_execution_time": round(float(row["avg"]), 3) if row["avg"] is not None else None,
    }


async def availability(conn: AsyncConnection, after: datetime, until: datetime) -> tuple[bool, datetime | None]:
    """Whether a queued run became claimable in (after, until] (a retry's backoff ended, a cron slot created
    ahead came), and the earliest moment one becomes claimable after `until`; one pass over the queued runs."""
    row = (await conn.execute(_AVAILABILITY, {"after": after, "until": until})).one()
    return bool(row[0]), row[1]


_AVAILABILITY = select(
    func.max(case((runs.c.available_at <= bindparam("until", type_=UTCDateTime()), 1), else_=0)),
    func.min(case((runs.c.available_at > bindparam("until", type_=UTCDateTime()), runs.c.available_at))),
).where(runs.c.status == RunStatus.QUEUED, runs.c.available_at > bindparam("after", type_=UTCDateTime()))


async def notify(conn: AsyncConnection) -> None:
    """Wake pollers on every server once this transaction commits."""
    await request_wake(conn)


