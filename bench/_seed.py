"""Stored runs for the reads benchmark, written straight into a database the server created and migrated.

Set-based (PostgreSQL: INSERT ... SELECT FROM generate_series; SQLite: the same from a recursive CTE),
so a million runs with their history, log lines and tracking events take a minute, not an hour of
API calls. The rows follow the schema of src/taskyard/storage/tables.py and look like a month of use:

- runs spread evenly over the last 30 days in id order, over the given tasks (unevenly: the first
  task has 40% of them) and workers; the newest ACTIVE runs are pending, queued or running (a
  running run's lease is a day away, so the reaper leaves it alone); the rest completed (92%),
  failed (5%) or aborted (3%), with execution times of 1 to 120 s;
- every run has its status history (queued, running, final);
- every 10th started run has 10 log lines and 5 tracking events.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SPAN = timedelta(days=30)
ACTIVE = 300  # the newest runs are still pending, queued or running; the same number at every size
LOG_EVERY = 10
LOG_LINES = 10
EVENTS = ("start", "progress", "progress", "progress", "end")
TASK_SHARES = (40, 25, 15, 10, 7, 3)  # percent of runs per task, in the order the tasks are given


@dataclass(frozen=True)
class Task:
    id: int
    name: str


@dataclass(frozen=True)
class Seeded:
    runs: int
    first_id: int
    last_id: int
    start: datetime  # the first run's creation time
    end: datetime  # the last run's
    seconds: float


def active(n: int) -> int:
    return min(ACTIVE, n // 10)


def _task_case(tasks: list[Task], column: str, pick: str) -> str:
    """CASE over `pick` (0-99) choosing a task's column by the shares above."""
    parts, upper = [], 0
    for task, share in zip(tasks, TASK_SHARES, strict=False):
        upper += share
        value = str(task.id) if column == "id" else "'" + task.name.replace("'", "''") + "'"
        parts.append(f"WHEN {pick} < {upper} THEN {value}")
    last = tasks[min(len(tasks), len(TASK_SHARES)) - 1]
    fallback = str(last.id) if column == "id" else "'" + last.name.replace("'", "''") + "'"
    return f"CASE {' '.join(parts)} ELSE {fallback} END"


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases' SQL here."""

    ts: str  # integer microseconds since the epoch ({0}) as the database stores a UTC instant
    series: str  # rows i = 1..{0}
    json: str  # a JSON text ({0}) as the database stores a JSON column
    uuid: str  # a uuid-shaped unique text from the integer {0}
    later: str  # the instant {0} plus {1} seconds
    numbers: str  # rows n = 1..{0}


POSTGRES = Dialect(
    ts="(timestamptz 'epoch' + ({0}) * interval '1 microsecond')",
    series="generate_series(1::bigint, {0}) AS i",
    json="({0})::jsonb",
    uuid="('bench000-0000-4000-8000-' || lpad(({0})::text, 12, '0'))",
    later="({0} + {1} * interval '1 second')",
    numbers="SELECT generate_series(1, {0}) AS n",
)
# SQLAlchemy stores a UTC instant on SQLite as the text 'YYYY-MM-DD HH:MM:SS.ffffff'.
SQLITE = Dialect(
    ts="(strftime('%Y-%m-%d %H:%M:%S', ({0}) / 1000000, 'unixepoch') || printf('.%06d', ({0}) % 1000000))",
    series="(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {0}) SELECT i FROM s)",
    json="{0}",
    uuid="printf('bench000-0000-4000-8000-%012d', {0})",
    later="(strftime('%Y-%m-%d %H:%M:%S', {0}, '+' || {1} || ' seconds') || substr({0}, 20))",
    numbers="WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {0}) SELECT n FROM s",
)


def _runs_select(n: int, tasks: list[Task], workers: list[str], start_us: int, step_us: int, sql: Dialect) -> str:
    """The SELECT producing n run rows."""
    worker_case = "CASE " + " ".join(f"WHEN w = {k} THEN '{name}'" for k, name in enumerate(workers)) + " END"
    host_case = "CASE " + " ".join(f"WHEN w = {k} THEN 'host-{name}'" for k, name in enumerate(workers)) + " END"

    def t(expr: str) -> str:
        return sql.ts.format(expr)

    return f"""
    WITH base AS (
        SELECT i, (i * 2654435761) % 1000 AS h, (i * 7919) % 100 AS pick, (i * 31) % {len(workers)} AS w,
               {start_us} + (i - 1) * {step_us} AS created,
               CASE WHEN i > {n - active(n)} THEN
                        CASE i % 3 WHEN 0 THEN 'pending' WHEN 1 THEN 'queued' ELSE 'running' END
                    WHEN (i * 2654435761) % 1000 < 920 THEN 'completed'
                    WHEN (i * 2654435761) % 1000 < 970 THEN 'failed'
                    ELSE 'aborted' END AS status,
               CASE (i * 13) % 20 WHEN 0 THEN 0 WHEN 1 THEN 2 WHEN 2 THEN 3 ELSE 1 END AS rank
        FROM {sql.series.format(n)}
    ), timed AS (
        SELECT base.*, status NOT IN ('pending', 'queued') AS started,
               status IN ('completed', 'failed', 'aborted') AS finished,
               created + 500000 + (h % 2000) * 1000 AS began,
               1000000 + (h % 120) * 1000000 + (i % 7) * 250000 AS took
        FROM base
    )
    SELECT
        {sql.uuid.format('i')},
        1, {_task_case(tasks, 'id', 'pick')}, {_task_case(tasks, 'name', 'pick')}, 'shell', status,
        CASE rank WHEN 0 THEN 'low' WHEN 2 THEN 'high' WHEN 3 THEN 'critical' ELSE 'normal' END, rank,
        {sql.json.format("'{}'")}, 3600, 0, 0, CASE WHEN started THEN 1 ELSE 0 END, 'manual',
        CASE WHEN started THEN {worker_case} END, CASE WHEN started THEN {host_case} END,
        CASE WHEN status = 'running' THEN {t(str(start_us + n * step_us + 86_400_000_000))} END,
        {t('created')},
        CASE status WHEN 'completed' THEN 'ok' END,
        CASE status WHEN 'failed' THEN 'exit status 1' WHEN 'aborted' THEN 'aborted by request' END,
        CASE status WHEN 'completed' THEN 0 WHEN 'failed' THEN 1 END,
        {t('created')},
        {t('CASE WHEN finished THEN began + took WHEN started THEN began ELSE created END')},
        {t('created')},
        CASE WHEN started THEN {t('began')} END,
        CASE WHEN finished THEN {t('began + took')} END,
        CASE WHEN finished THEN took / 1000000.0 END
    FROM timed ORDER BY i
    """


RUN_COLUMNS = ("uuid, project_id, task_id, task_name, task_type, status, priority, priority_rank, parameters, "
               "timeout_seconds, max_retries, retry_count, attempt, trigger, worker_id, worker_hostname, "
               "lease_expires_at, available_at, result, error_message, exit_code, created_at, updated_at, "
               "queued_at, started_at, completed_at, execution_time")


def _followers(first: int, last: int, sql: Dialect) -> list[str]:
    """History, log lines and events of runs first..last, from the runs themselves."""
    between = f"id BETWEEN {first} AND {last}"
    data = "'{\"percentage\": ' || ((k.n - 1) * 25) || '}'"
    return [
        f"""INSERT INTO run_history (run_id, attempt, status, at, worker_id, reason)
            SELECT id, 0, CASE status WHEN 'pending' THEN 'pending' ELSE 'queued' END, created_at, NULL, 'triggered'
            FROM runs WHERE {between} ORDER BY id""",
        f"""INSERT INTO run_history (run_id, attempt, status, at, worker_id, reason)
            SELECT id, 1, 'running', started_at, worker_id, NULL
            FROM runs WHERE {between} AND started_at IS NOT NULL ORDER BY id""",
        f"""INSERT INTO run_history (run_id, attempt, status, at, worker_id, reason)
            SELECT id, attempt, status, completed_at, worker_id, error_message
            FROM runs WHERE {between} AND completed_at IS NOT NULL ORDER BY id""",
        f"""INSERT INTO run_logs (run_id, attempt, timestamp, level, stream, message)
            SELECT r.id, 1, {sql.later.format('r.started_at', 'k.n')},
                   CASE WHEN k.n = {LOG_LINES} AND r.status = 'failed' THEN 'error' ELSE 'info' END,
                   'stdout', 'processed batch ' || k.n || ' of {LOG_LINES}'
            FROM runs r CROSS JOIN ({sql.numbers.format(LOG_LINES)}) k
            WHERE r.{between} AND r.id % {LOG_EVERY} = 0 AND r.started_at IS NOT NULL ORDER BY r.id, k.n""",
        f"""INSERT INTO run_events (run_id, project_id, name, data, timestamp)
            SELECT r.id, 1, CASE k.n WHEN 1 THEN 'start' WHEN {len(EVENTS)} THEN 'end' ELSE 'progress' END,
                   {sql.json.format(data)}, {sql.later.format('r.started_at', 'k.n')}
            FROM runs r CROSS JOIN ({sql.numbers.format(len(EVENTS))}) k
            WHERE r.{between} AND r.id % {LOG_EVERY} = 0 AND r.started_at IS NOT NULL ORDER BY r.id, k.n""",
        f"""UPDATE tasks SET last_run_at = (SELECT max(created_at) FROM runs WHERE runs.task_id = tasks.id),
                   last_run_status = 'completed'
            WHERE id IN (SELECT DISTINCT task_id FROM runs WHERE {between})""",
    ]


def seed_postgres(database_url: str, n: int, tasks: list[Task], workers: list[str],
                  now: datetime | None = None) -> Seeded:
    import psycopg

    started = time.perf_counter()
    start, step_us = _timeline(n, now)
    with psycopg.connect(database_url) as conn:
        first = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM runs").fetchone()[0])  # type: ignore[index]
        conn.execute(f"INSERT INTO runs ({RUN_COLUMNS}) "
                     + _runs_select(n, tasks, workers, _micros(start), step_us, POSTGRES))
        last = int(conn.execute("SELECT max(id) FROM runs").fetchone()[0])  # type: ignore[index]
        for statement in _followers(first, last, POSTGRES):
            conn.execute(statement)
        conn.commit()
    # What autovacuum would have done by the time a month of runs is stored.
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in ("runs", "run_history", "run_logs", "run_events", "tasks"):
            conn.execute(f"VACUUM ANALYZE {table}")
    return Seeded(n, first, last, start, start + timedelta(microseconds=(n - 1) * step_us),
                  round(time.perf_counter() - started, 1))


def seed_sqlite(path: str, n: int, tasks: list[Task], workers: list[str], now: datetime | None = None) -> Seeded:
    started = time.perf_counter()
    start, step_us = _timeline(n, now)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("BEGIN IMMEDIATE")
        first = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM runs").fetchone()[0])
        conn.execute(f"INSERT INTO runs ({RUN_COLUMNS}) "
                     + _runs_select(n, tasks, workers, _micros(start), step_us, SQLITE))
        last = int(conn.execute("SELECT max(id) FROM runs").fetchone()[0])
        for statement in _followers(first, last, SQLITE):
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return Seeded(n, first, last, start, start + timedelta(microseconds=(n - 1) * step_us),
                  round(time.perf_counter() - started, 1))


def _timeline(n: int, now: datetime | None) -> tuple[datetime, int]:
    """The first run's creation time and the step between runs, so the last one is an hour ago."""
    end = (now or datetime.now(UTC)) - timedelta(hours=1)
    step_us = max(1, int(SPAN.total_seconds() * 1_000_000 // max(n, 1)))
    return end - timedelta(microseconds=(n - 1) * step_us), step_us


def _micros(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000 + value.microsecond
