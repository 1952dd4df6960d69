"""Reads behind the job tracking API (spec 5): a run's logs, stages, samples, events, waits and peers.

Every query is bounded and names its run by the internal id the service resolved inside one project."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run, Worker
from taskyard.domain.status import RunStatus, WorkerStatus
from taskyard.storage.tables import (
    run_events,
    run_history,
    run_logs,
    run_samples,
    run_stages,
    run_waits,
    runs,
    task_dependencies,
    workers,
)

# Stored level spellings (lower-cased) of each level the API names, most severe last.
LEVEL_WORDS: dict[str, tuple[str, ...]] = {
    "DEBUG": ("debug", "trace"),
    "INFO": ("info", "notice"),
    "WARN": ("warn", "warning"),
    "ERROR": ("error", "err", "critical", "fatal"),
}
LEVEL_ORDER = ("DEBUG", "INFO", "WARN", "ERROR")
WORKER_SAMPLES = ("cpu", "memory_mb", "disk_read_bytes", "disk_write_bytes", "connections")
MAX_SAMPLES = 20_000
MAX_EVENTS = 10_000


def level_of(stored: str | None) -> str:
    """The API's word for a stored level; unknown spellings read INFO."""
    word = (stored or "").lower()
    for level, spellings in LEVEL_WORDS.items():
        if word in spellings:
            return level
    return "INFO"


def _levels_from(minimum: str) -> list[str]:
    chosen = LEVEL_ORDER[LEVEL_ORDER.index(minimum):]
    return [s for level in chosen for s in LEVEL_WORDS[level]]


async def run_in_project(conn: AsyncConnection, project_id: int, run_uuid: str) -> Run | None:
    row = (await conn.execute(
        select(runs).where(runs.c.uuid == run_uuid, runs.c.project_id == project_id))).mappings().first()
    return Run.from_row(row) if row else None


async def runs_by_ids(conn: AsyncConnection, run_ids: list[int]) -> dict[int, Run]:
    if not run_ids:
        return {}
    rows = (await conn.execute(select(runs).where(runs.c.id.in_(sorted(set(run_ids)))))).mappings().all()
    return {int(r["id"]): Run.from_row(r) for r in rows}


# -- logs ---------------------------------------------------------------------------------------------------

async def log_summary(conn: AsyncConnection, run_id: int) -> dict[str, Any]:
    """Counts per API level and the time range, from one GROUP BY over the run's lines."""
    word = func.lower(run_logs.c.level)
    rows = (await conn.execute(
        select(word.label("level"), func.count().label("n"), func.min(run_logs.c.timestamp).label("first"),
               func.max(run_logs.c.timestamp).label("last"))
        .where(run_logs.c.run_id == run_id).group_by(word)
    )).mappings().all()
    counts = dict.fromkeys(LEVEL_ORDER, 0)
    first: datetime | None = None
    last: datetime | None = None
    for row in rows:
        counts[level_of(row["level"])] += int(row["n"])
        # min/max over a type-decorated column come back raw on SQLite: convert through the column type.
        lo, hi = _instant(row["first"]), _instant(row["last"])
        first = lo if first is None or (lo is not None and lo < first) else first
        last = hi if last is None or (hi is not None and hi > last) else last
    return {"counts": counts, "total": sum(counts.values()), "first": first, "last": last}


def _instant(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def logs(conn: AsyncConnection, run_id: int, *, minimum: str, since: datetime | None,
               until: datetime | None, limit: int) -> list[dict[str, Any]]:
    query = select(run_logs).where(run_logs.c.run_id == run_id,
                                   func.lower(run_logs.c.level).in_(_levels_from(minimum)))
    if since is not None:
        query = query.where(run_logs.c.timestamp >= since)
    if until is not None:
        query = query.where(run_logs.c.timestamp <= until)
    rows = (await conn.execute(query.order_by(run_logs.c.timestamp, run_logs.c.id).limit(limit))).mappings().all()
    return [dict(r) for r in rows]


# -- stages and samples ---------------------------------------------------------------------------------------

async def stages(conn: AsyncConnection, run_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {r: [] for r in run_ids}
    if not run_ids:
        return found
    rows = (await conn.execute(
        select(run_stages).where(run_stages.c.run_id.in_(run_ids))
        .order_by(run_stages.c.run_id, run_stages.c.stage_order, run_stages.c.name)
    )).mappings().all()
    for row in rows:
        found[int(row["run_id"])].append(dict(row))
    return found


async def latest_samples(conn: AsyncConnection, run_ids: list[int], *, source: str,
                         names: tuple[str, ...] | None = None) -> dict[int, dict[str, float]]:
    """The newest value of each sample name from one source ("worker" or "task"), per run."""
    found: dict[int, dict[str, float]] = {r: {} for r in run_ids}
    if not run_ids:
        return found
    newest = select(func.max(run_samples.c.id)).where(run_samples.c.run_id.in_(run_ids),
                                                       run_samples.c.source == source)
    if names is not None:
        newest = newest.where(run_samples.c.name.in_(names))
    newest = newest.group_by(run_samples.c.run_id, run_samples.c.name)
    rows = (await conn.execute(
        select(run_samples.c.run_id, run_samples.c.name, run_samples.c.value)
        .where(run_samples.c.id.in_(newest.scalar_subquery()))
    )).mappings().all()
    for row in rows:
        found[int(row["run_id"])][row["name"]] = float(row["value"])
    return found


async def peak_samples(conn: AsyncConnection, run_id: int, names: tuple[str, ...]) -> dict[str, float]:
    rows = (await conn.execute(
        select(run_samples.c.name, func.max(run_samples.c.value))
        .where(run_samples.c.run_id == run_id, run_samples.c.source == "worker", run_samples.c.name.in_(names))
        .group_by(run_samples.c.name)
    )).all()
    return {str(name): float(value) for name, value in rows}


async def worker_sample_series(conn: AsyncConnection, run_id: int, extra: tuple[str, ...] = ()
                               ) -> list[dict[str, Any]]:
    """The newest MAX_SAMPLES worker samples (plus task samples named in `extra`), oldest first."""
    rows = (await conn.execute(
        select(run_samples.c.name, run_samples.c.value, run_samples.c.timestamp)
        .where(run_samples.c.run_id == run_id,
               or_(and_(run_samples.c.source == "worker", run_samples.c.name.in_(WORKER_SAMPLES)),
                   run_samples.c.name.in_(extra)))
        .order_by(run_samples.c.id.desc()).limit(MAX_SAMPLES)
    )).mappings().all()
    return [dict(r) for r in reversed(rows)]


# -- history and events -------------------------------------------------------------------------------------

async def history(conn: AsyncConnection, run_id: int) -> list[dict[str, Any]]:
    rows = (await conn.execute(
        select(run_history).where(run_history.c.run_id == run_id).order_by(run_history.c.id)
    )).mappings().all()
    return [dict(r) for r in rows]


async def events(conn: AsyncConnection, run_id: int, *, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The run's newest MAX_EVENTS events, oldest first."""
    query = select(run_events).where(run_events.c.run_id == run_id)
    if exclude:
        query = query.where(run_events.c.name.not_in(exclude))
    rows = (await conn.execute(query.order_by(run_events.c.id.desc()).limit(MAX_EVENTS))).mappings().all()
    return [dict(r) for r in reversed(rows)]


async def problem_logs(conn: AsyncConnection, run_id: int, *, minimum: str, limit: int = 1000
                       ) -> list[dict[str, Any]]:
    """The newest `limit` lines at `minimum` or above, oldest first."""
    rows = (await conn.execute(
        select(run_logs).where(run_logs.c.run_id == run_id,
                               func.lower(run_logs.c.level).in_(_levels_from(minimum)))
        .order_by(run_logs.c.id.desc()).limit(limit)
    )).mappings().all()
    return [dict(r) for r in reversed(rows)]


# -- peers: benchmarks, queue positions, dependencies ---------------------------------------------------------

async def duration_comparison(conn: AsyncConnection, run: Run, duration: float) -> dict[str, Any] | None:
    """Earlier completed runs of the same task: their mean duration and how many were slower, similar
    (within 5 %) or faster than `duration`."""
    seconds = runs.c.execution_time
    row = (await conn.execute(
        select(func.count().label("n"), func.avg(seconds).label("mean"),
               func.sum(case((seconds > duration * 1.05, 1), else_=0)).label("slower"),
               func.sum(case((seconds < duration * 0.95, 1), else_=0)).label("faster"))
        .where(runs.c.task_id == run.task_id, runs.c.project_id == run.project_id, runs.c.id < run.id,
               runs.c.status == RunStatus.COMPLETED, seconds.is_not(None))
    )).mappings().one()
    if not row["n"]:
        return None
    return {"count": int(row["n"]), "mean": float(row["mean"]), "slower": int(row["slower"] or 0),
            "faster": int(row["faster"] or 0)}


async def queue_positions(conn: AsyncConnection, project_id: int, run_ids: list[int]) -> dict[int, int]:
    """1-based place in claim order (priority, then age) among the project's queued runs."""
    if not run_ids:
        return {}
    ranked = (
        select(runs.c.id, func.row_number().over(order_by=(runs.c.priority_rank.desc(), runs.c.id)).label("pos"))
        .where(runs.c.project_id == project_id, runs.c.status == RunStatus.QUEUED)
    ).subquery()
    rows = await conn.execute(select(ranked.c.id, ranked.c.pos).where(ranked.c.id.in_(run_ids)))
    return {int(i): int(p) for i, p in rows}


async def list_runs(conn: AsyncConnection, project_id: int, *, uuids: list[str] | None, statuses: list[str] | None,
                    submitted_by: str | None, limit: int) -> list[Run]:
    query = select(runs).where(runs.c.project_id == project_id)
    if uuids is not None:
        query = query.where(runs.c.uuid.in_(uuids))
    if statuses is not None:
        query = query.where(runs.c.status.in_(statuses))
    if submitted_by is not None:
        query = query.where(runs.c.submitted_by == submitted_by)
    rows = (await conn.execute(query.order_by(runs.c.id.desc()).limit(limit))).mappings().all()
    return [Run.from_row(r) for r in rows]


async def waits(conn: AsyncConnection, run_id: int) -> tuple[list[Run], list[Run]]:
    """(runs this run waits on, runs waiting on this run)."""
    on = select(run_waits.c.dependency_run_id).where(run_waits.c.run_id == run_id)
    by = select(run_waits.c.run_id).where(run_waits.c.dependency_run_id == run_id)
    prerequisites = (await conn.execute(select(runs).where(runs.c.id.in_(on)).order_by(runs.c.id))).mappings().all()
    dependents = (await conn.execute(select(runs).where(runs.c.id.in_(by)).order_by(runs.c.id))).mappings().all()
    return [Run.from_row(r) for r in prerequisites], [Run.from_row(r) for r in dependents]


async def task_dependency_runs(conn: AsyncConnection, run: Run) -> list[Run]:
    """For each task the run's task depends on: its latest run created before this one, in the project."""
    latest = (
        select(func.max(runs.c.id))
        .where(runs.c.task_id.in_(select(task_dependencies.c.depends_on_id)
                                  .where(task_dependencies.c.task_id == run.task_id)),
               runs.c.project_id == run.project_id, runs.c.id < run.id)
        .group_by(runs.c.task_id)
    )
    rows = (await conn.execute(select(runs).where(runs.c.id.in_(latest.scalar_subquery())).order_by(runs.c.id)
                               )).mappings().all()
    return [Run.from_row(r) for r in rows]


async def first_started(conn: AsyncConnection, run_id: int) -> datetime | None:
    value = (await conn.execute(
        select(func.min(run_history.c.id)).where(run_history.c.run_id == run_id,
                                                 run_history.c.status == RunStatus.RUNNING))).scalar()
    if value is None:
        return None
    at: datetime = (await conn.execute(select(run_history.c.at).where(run_history.c.id == value))).scalar_one()
    return at


async def worker(conn: AsyncConnection, worker_id: str) -> Worker | None:
    row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).mappings().first()
    return Worker.from_row(row) if row else None


async def capacity(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
    """Live workers' slots and load, and the project-wide queue (claimable now)."""
    live = (await conn.execute(
        select(func.count().label("workers"),
               func.coalesce(func.sum(workers.c.max_concurrent_tasks), 0).label("slots"),
               func.coalesce(func.sum(workers.c.current_task_count), 0).label("busy"))
        .where(workers.c.status == WorkerStatus.ACTIVE, workers.c.deleted.is_(False))
    )).mappings().one()
    running = (await conn.execute(select(func.count()).where(runs.c.status == RunStatus.RUNNING))).scalar_one()
    queued = (await conn.execute(select(func.count()).where(runs.c.status == RunStatus.QUEUED,
                                                            runs.c.available_at <= now))).scalar_one()
    return {"workers": int(live["workers"]), "slots": int(live["slots"]), "busy": int(live["busy"]),
            "running": int(running), "queued": int(queued)}

