"""Finished runs counted per task and final status, so statistics read a few rows instead of every run.

A final run never changes again and runs are never deleted, so each finished run is counted once, for
good. `advance` (the leader, every few seconds) walks the runs in id order behind a mark: every run up to
`run_tally_marks.through_id` is either counted in `run_tallies` or, when it had not finished as the mark
passed it, listed in `run_tally_open` until it has. A reader adds the tallies to the runs after the mark
and the open ones, read as they are, in one statement (`figures`), so the sum is exact whenever it is
read, however far behind the mark is. The cost of a read is the number of tasks plus the runs created
since the last advance plus the unfinished ones: never the runs stored.

The mark only passes runs created before a cutoff a minute in the past: on PostgreSQL a run's id is
drawn before its transaction commits, and a run the advancing transaction cannot see yet must not be
passed. `advance` reads everything it acts on in one statement, so it needs no stricter isolation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.status import FINAL_RUN_STATUSES
from taskyard.storage.tables import run_tallies, run_tally_marks, run_tally_open, runs

FINAL = {s.value for s in FINAL_RUN_STATUSES}


@dataclass(frozen=True)
class Figures:
    """Runs of one status: how many, the sum of their execution times, and how many have one."""

    runs: int = 0
    seconds: float = 0.0
    timed: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.runs + other.runs, self.seconds + other.seconds, self.timed + other.timed)

    @property
    def average_seconds(self) -> float | None:
        return round(self.seconds / self.timed, 3) if self.timed else None


_MARK = select(run_tally_marks.c.through_id).where(run_tally_marks.c.id == 1)


async def mark(conn: AsyncConnection) -> int:
    return int((await conn.execute(_MARK)).scalar() or 0)


async def figures(conn: AsyncConnection, *, project_id: int | None, task_id: int | None = None,
                  statuses: list[str] | None = None) -> dict[str, Figures]:
    """Per status, the runs matching the filters (None: any project, any task, any status), exact: one
    statement reads the mark, the tallies and the runs not tallied, so they agree with each other."""
    engine = conn.sync_engine
    seen = _seen.get(engine)
    if seen is None:
        seen = await mark(conn)
    statement = _figures(project_id is not None, task_id is not None, statuses is not None)
    parameters = {k: v for k, v in (("seen", seen), ("project_id", project_id), ("task_id", task_id),
                                    ("statuses", statuses)) if v is not None}
    rows = (await conn.execute(statement, parameters)).all()
    through = int(rows[0][4] or 0)
    if through < seen:  # the mark went back (a database restored under a running server): ask again
        _seen.pop(engine, None)
        return await figures(conn, project_id=project_id, task_id=task_id, statuses=statuses)
    _seen[engine] = through
    return {str(status): Figures(int(n or 0), float(s or 0.0), int(t or 0))
            for status, n, s, t, _ in rows if status is not None}


# Where each database's mark was last seen. The statement below bounds its scan of the runs past the mark
# by this value, a plain parameter, so the planner knows how few runs lie past it; the exact mark comes
# from the statement itself. Marks only move forward, so a stale value costs a longer scan, never a
# wrong count.
_seen: WeakKeyDictionary[Any, int] = WeakKeyDictionary()


@cache
def _figures(by_project: bool, by_task: bool, by_status: bool) -> Select[Any]:
    """The statement for one combination of filters, built once: building and keying it anew cost more
    than running it."""
    through = _MARK.scalar_subquery()
    # The runs not tallied: after the mark, or open. Computed first (MATERIALIZED), by primary key only:
    # with the filters beside them, SQLite would rather walk a status or task index through every run.
    columns = (runs.c.project_id, runs.c.task_id, runs.c.status, runs.c.execution_time)
    live = union_all(
        select(*columns).where(runs.c.id > bindparam("seen", type_=BigInteger), runs.c.id > through),
        select(*columns).where(runs.c.id.in_(select(run_tally_open.c.run_id))),
    ).cte("live").prefix_with("MATERIALIZED")

    def filters(table: Any) -> list[Any]:
        where = [true()]
        if by_project:
            where.append(table.project_id == bindparam("project_id", type_=BigInteger))
        if by_task:
            where.append(table.task_id == bindparam("task_id", type_=BigInteger))
        if by_status:
            where.append(table.status.in_(bindparam("statuses", expanding=True)))
        return where

    seconds = live.c.execution_time
    tallied = select(run_tallies.c.status, run_tallies.c.runs, run_tallies.c.seconds, run_tallies.c.timed).where(
        *filters(run_tallies.c))
    untallied = select(live.c.status, literal(1), func.coalesce(seconds, 0.0),
                       case((seconds.is_(None), 0), else_=1)).where(*filters(live.c))
    # A row of no status: the answer always has one, carrying the mark even when nothing matches.
    nothing = select(cast(null(), String(16)), literal(0), literal(0.0), literal(0))
    both = union_all(tallied, untallied, nothing).subquery()
    return select(both.c.status, func.sum(both.c.runs), func.sum(both.c.seconds), func.sum(both.c.timed),
                  through.label("through")).group_by(both.c.status)


async def advance(conn: AsyncConnection, *, before: datetime, chunk: int, now: datetime) -> int:
    """Count the open runs that have finished, and move the mark over up to `chunk` more runs created
    before `before`. Returns how many runs the mark passed. Run it in a write transaction."""
    locked = _MARK.with_for_update() if conn.dialect.name == "postgresql" else _MARK
    # One advance at a time: a second one waits here, then starts where the first one stopped.
    through = (await conn.execute(locked)).scalar()
    if through is None:
        await conn.execute(insert(run_tally_marks).values(id=1, through_id=0, updated_at=now))
        through = 0
    counted: dict[tuple[int, str], list[Any]] = defaultdict(lambda: [0, 0, 0.0, 0])

    def count(row: Any) -> None:
        entry = counted[(int(row.task_id), str(row.status))]
        entry[0] = int(row.project_id)
        entry[1] += 1
        if row.execution_time is not None:
            entry[2] += float(row.execution_time)
            entry[3] += 1

    columns = (runs.c.id, runs.c.project_id, runs.c.task_id, runs.c.status, runs.c.execution_time)
    finished = [r for r in (await conn.execute(
        select(*columns).where(runs.c.id.in_(select(run_tally_open.c.run_id))))).all() if r.status in FINAL]
    for done in finished:
        count(done)
    # One statement reads the chunk: whether each run counts now or stays open is decided in one snapshot.
    ahead = (await conn.execute(select(*columns, runs.c.created_at).where(runs.c.id > through)
                                .order_by(runs.c.id).limit(chunk))).all()
    passed: list[Any] = []
    for row in ahead:
        if row.created_at >= before:
            break
        passed.append(row)
    for row in passed:
        if row.status in FINAL:
            count(row)
    if counted:
        await _add(conn, counted)
    if finished:
        await conn.execute(delete(run_tally_open).where(run_tally_open.c.run_id.in_([r.id for r in finished])))
    still_open = [{"run_id": r.id} for r in passed if r.status not in FINAL]
    if still_open:
        await conn.execute(insert(run_tally_open), still_open)
    if passed:
        await conn.execute(update(run_tally_marks).where(run_tally_marks.c.id == 1)
                           .values(through_id=passed[-1].id, updated_at=now))
    return len(passed)


async def _add(conn: AsyncConnection, counted: dict[tuple[int, str], list[Any]]) -> None:
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = dialect_insert(run_tallies)
    stmt = stmt.on_conflict_do_update(index_elements=["task_id", "status"], set_={
        "runs": run_tallies.c.runs + stmt.excluded.runs,
        "seconds": run_tallies.c.seconds + stmt.excluded.seconds,
        "timed": run_tallies.c.timed + stmt.excluded.timed,
    })
    await conn.execute(stmt, [{"task_id": task_id, "status": status, "project_id": project_id, "runs": n,
                               "seconds": seconds, "timed": timed}
                              for (task_id, status), (project_id, n, seconds, timed) in sorted(counted.items())])
