"""Reads at scale: the read endpoints under load with many runs stored, beside the same SQL run directly.

    python -m bench reads [--stored 1000000] [--repeat 3]

For SQLite and PostgreSQL, at two sizes (10,000 runs and --stored, default 1,000,000), a real
`taskyard server` migrates a fresh database, gets a few tasks and workers through the API, and then
the runs with their history, log lines and tracking events are written straight into the database
(bench/_seed.py). Then, for each read endpoint:

- taskyard: an open-loop mix of every endpoint below at 200 requests/s in all (each request sent at
  its planned time, however long the earlier ones take) over async httpx for SECONDS; p50 and p99 per
  endpoint, measured from the planned send time;
- direct: the very statements that endpoint issues (recorded from the app's own engine, in process,
  one recording per request variant), replayed with the driver (psycopg, sqlite3) in one transaction
  per request, from the same open loop at the same rate, over as many connections as the server's
  pool may open: the database's own time for the endpoint's queries, with nothing of HTTP, JSON or
  Python objects.

Endpoints: GET /api/runs unfiltered and with each filter (status, task_id, worker_id, one day by
start_date/end_date), with each sort (and the oldest first), a page near the end; GET /api/runs/{id};
GET /api/runs/{id}/logs; GET /api/tasks/{id} (its statistics); GET /api/system/stats.

Every figure is taskyard's p99 at the large size beside the direct p99; the note holds the p50s, the
10,000-run p99s and how much the endpoint's p99 grew from 10,000 to the large size (the goal: within 3x
of the direct query, and no growth with the number of stored runs). The server's resident memory is
compared between the two sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import event

from bench import _seed
from bench._context import DATABASE_NAMES, Context, Server
from bench._report import Figure, Measured, Report, percentile
from bench.memory import tree_rss_mb

RATE = 200.0  # requests per second across every endpoint
SECONDS = 40.0
TASKS = 6
WORKERS = 8
VARIANTS = 32  # distinct ids per endpoint that reads one object
PAGE_SIZE = 20
# The server's pool: PostgreSQL 10 + 10 overflow; SQLAlchemy's default for SQLite files 5 + 10.
CONNECTIONS = {"postgres": 20, "sqlite": 15}
IN_FLIGHT = 64  # requests at once at most, from either side
ALONE = 20  # requests per endpoint sent one at a time
ALONE_RATE = 50.0  # requests per second when sent one at a time (a pause between them)
QUIET = ("BEGIN", "COMMIT", "ROLLBACK")


@dataclass(frozen=True)
class Case:
    """One endpoint: its requests (cycled through) and, after recording, the SQL each one issues."""

    name: str
    requests: list[tuple[str, dict[str, Any]]]
    statements: list[list[tuple[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class Stored:
    tasks: list[_seed.Task]
    workers: list[str]
    seeded: _seed.Seeded
    tallied_seconds: float  # until the server's leader had counted the stored runs


def prepare(server: Server, database: str, runs: int) -> Stored:
    """Tasks and workers through the API, then the runs straight into the database."""
    tasks = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for k in range(TASKS):
            body = client.post("/api/tasks", json={"name": f"reads-{k}", "task_type": "shell",
                                                   "command": "true", "retry_count": 0})
            body.raise_for_status()
            tasks.append(_seed.Task(int(body.json()["data"]["id"]), f"reads-{k}"))
        workers = []
        for k in range(WORKERS):
            body = client.post("/api/workers", json={"hostname": f"reads-host-{k}", "ip_address": "127.0.0.1",
                                                     "port": 9000 + k, "task_types": ["shell"]})
            body.raise_for_status()
            workers.append(str(body.json()["data"]["id"]))
    if database == "postgres":
        seeded = _seed.seed_postgres(server.database_url, runs, tasks, workers)
    else:
        seeded = _seed.seed_sqlite(server.database_url.removeprefix("sqlite:///"), runs, tasks, workers)
    tallied = wait_for_tallies(database, server.database_url, seeded.last_id)
    if database == "sqlite":
        checkpoint(server.database_url.removeprefix("sqlite:///"))
    return Stored(tasks, workers, seeded, tallied)


def checkpoint(path: str, timeout: float = 120) -> None:
    """Fold the write-ahead log the seeding left (as large as the database) back into the database file,
    as SQLite itself does in small steps over time; otherwise the server's first writes would do it in
    the middle of the measurement."""
    import sqlite3

    deadline = time.perf_counter() + timeout
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        while time.perf_counter() < deadline:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.2)
    raise RuntimeError(f"could not checkpoint {path} in {timeout:.0f} s")


def wait_for_tallies(database: str, database_url: str, last_id: int, timeout: float = 600) -> float:
    """Until the server's leader has counted the stored runs into its tallies, as it would have long
    before a month of runs piled up; returns the seconds it took."""
    started = time.perf_counter()
    query = "SELECT through_id FROM run_tally_marks WHERE id = 1"
    while time.perf_counter() - started < timeout:
        if database == "postgres":
            import psycopg

            with psycopg.connect(database_url) as conn:
                row = conn.execute(query).fetchone()
        else:
            import sqlite3

            with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
                row = conn.execute(query).fetchone()
        if row and int(row[0]) >= last_id:
            return round(time.perf_counter() - started, 1)
        time.sleep(0.5)
    raise RuntimeError(f"the server had not tallied {last_id} runs after {timeout:.0f} s")


def cases(stored: Stored) -> list[Case]:
    seeded = stored.seeded
    day = (seeded.start + (seeded.end - seeded.start) / 2).date().isoformat()
    span = seeded.last_id - seeded.first_id + 1
    ids = [seeded.first_id + (k * 7919) % span for k in range(VARIANTS)]
    logged = [i - i % _seed.LOG_EVERY + _seed.LOG_EVERY for i in ids]
    logged = [i if i <= seeded.last_id - _seed.active(span) else i - 10 * _seed.LOG_EVERY for i in logged]
    last_page = -(-span // PAGE_SIZE)

    def runs(name: str, **params: Any) -> Case:
        return Case(name, [("/api/runs", {"size": PAGE_SIZE, **params})])

    return [
        runs("list"),
        runs("list status=failed", status="failed"),
        runs("list task_id", task_id=stored.tasks[1].id),
        runs("list worker_id", worker_id=stored.workers[2]),
        runs("list one day", start_date=day, end_date=day),
        runs("sort started_at", sort="started_at"),
        runs("sort completed_at", sort="completed_at"),
        runs("sort execution_time", sort="execution_time"),
        runs("sort status", sort="status"),
        runs("sort priority", sort="priority"),
        runs("sort task_id", sort="task_id"),
        runs("sort id asc", sort="id", order="asc"),
        runs("oldest first", order="asc"),
        runs("deep page", page=max(1, last_page - 1)),
        Case("run detail", [(f"/api/runs/{i}", {}) for i in ids]),
        Case("run logs", [(f"/api/runs/{i}/logs", {}) for i in logged]),
        Case("task statistics", [(f"/api/tasks/{t.id}", {}) for t in stored.tasks]),
        Case("system stats", [("/api/system/stats", {})]),
    ]


async def record(database_url: str, home: Path, plan: list[Case]) -> list[Case]:
    """The statements each request issues, from the app's own engine, serving in this process."""
    from taskyard.api.app import create_app
    from taskyard.settings import ServerSettings

    app = create_app(ServerSettings(database_url=database_url, home=home, rate_limit=0), migrate_on_start=False)
    issued: list[tuple[str, Any]] = []
    recorded = []
    async with _lifespan(app):
        engine = app.state.core.db.engine.sync_engine

        def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
            if statement.strip().upper() not in QUIET:
                issued.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", listen)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for case in plan:
                statements = []
                for path, params in case.requests:
                    issued.clear()
                    (await client.get(path, params=params)).raise_for_status()
                    statements.append(list(issued))
                recorded.append(Case(case.name, case.requests, statements))
    return recorded


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        yield


def schedule(plan: list[Case], rate: float, seconds: float) -> list[tuple[int, int]]:
    """(case, variant) for each request: the cases in turn, each cycling through its variants."""
    n = max(len(plan), int(rate * seconds))
    return [(k % len(plan), (k // len(plan)) % len(plan[k % len(plan)].requests)) for k in range(n)]


async def open_loop(plan: list[Case], rate: float, seconds: float, send: Callable[[Case, int], Awaitable[None]],
                    in_flight: int = IN_FLIGHT) -> dict[str, list[float]]:
    """Each request is due at its planned time, whatever the earlier ones are doing, and its latency counts
    from that time: a server that falls behind is charged for the wait. IN_FLIGHT senders take the due
    requests in turn (a queue here, not thousands of requests parked in the HTTP client's pool, whose
    bookkeeping grows with their number and would make the client the bottleneck). With one sender, the
    requests go one at a time and each is timed from when it was sent."""
    latencies: dict[str, list[float]] = {case.name: [] for case in plan}
    charge_waiting = in_flight > 1
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[tuple[Case, int, float] | None] = asyncio.Queue()

    async def sender() -> None:
        while (item := await due.get()) is not None:
            case, variant, planned = item
            sent = loop.time()
            await send(case, variant)
            latencies[case.name].append((loop.time() - (planned if charge_waiting else sent)) * 1000)

    senders = [asyncio.create_task(sender()) for _ in range(in_flight)]
    # The client's own garbage collection paused it for tens of milliseconds now and then (an HTTP client
    # makes plenty of cyclic garbage), which read as the server's p99: no collection while measuring.
    gc.collect()
    gc.disable()
    try:
        started = loop.time()
        for k, (c, variant) in enumerate(schedule(plan, rate, seconds)):
            planned = started + k / rate
            delay = planned - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait((plan[c], variant, planned))
        for _ in senders:
            due.put_nowait(None)
        await asyncio.gather(*senders)
    finally:
        gc.enable()
    return latencies


async def load_http(url: str, plan: list[Case], rate: float, seconds: float, in_flight: int = IN_FLIGHT,
                    ) -> dict[str, list[float]]:
    # Idle connections are dropped before the server's keep-alive of 5 s would close them under a request.
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def send(case: Case, variant: int) -> None:
            path, params = case.requests[variant]
            try:
                response = await client.get(path, params=params)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A kept-alive connection the server closed as this request went out: a client sends an
                # idempotent GET again (the time lost stays in the figure).
                response = await client.get(path, params=params)
            response.raise_for_status()

        return await open_loop(plan, rate, seconds, send, in_flight)


async def load_direct(database: str, database_url: str, plan: list[Case], rate: float, seconds: float,
                      in_flight: int = IN_FLIGHT) -> dict[str, list[float]]:
    connections = CONNECTIONS[database]
    if database == "postgres":
        async with _postgres_pool(database_url, connections) as send:
            return await open_loop(plan, rate, seconds, send, in_flight)
    with _sqlite_pool(database_url.removeprefix("sqlite:///"), connections) as send_sync:
        async def send(case: Case, variant: int) -> None:
            await send_sync(case, variant)

        return await open_loop(plan, rate, seconds, send, in_flight)


@contextlib.asynccontextmanager
async def _postgres_pool(database_url: str, size: int) -> AsyncIterator[Callable[[Case, int], Awaitable[None]]]:
    import psycopg

    idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    opened = [await psycopg.AsyncConnection.connect(database_url) for _ in range(size)]
    for conn in opened:
        idle.put_nowait(conn)

    async def send(case: Case, variant: int) -> None:
        conn = await idle.get()
        try:
            async with conn.cursor() as cursor:
                for statement, parameters in case.statements[variant]:
                    await cursor.execute(statement, parameters or None)
                    if cursor.description is not None:
                        await cursor.fetchall()
            await conn.commit()
        finally:
            idle.put_nowait(conn)

    try:
        yield send
    finally:
        for conn in opened:
            await conn.close()


@contextlib.contextmanager
def _sqlite_pool(path: str, size: int) -> Iterator[Callable[[Case, int], Awaitable[None]]]:
    import queue
    import sqlite3

    idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
    opened = []
    for _ in range(size):
        # As the server's engine opens them (storage/database.py).
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        opened.append(conn)
        idle.put(conn)
    threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="direct")

    def run(case: Case, variant: int) -> None:
        conn = idle.get()
        try:
            conn.execute("BEGIN")
            for statement, parameters in case.statements[variant]:
                conn.execute(statement, parameters or ()).fetchall()
            conn.execute("COMMIT")
        finally:
            idle.put(conn)

    async def send(case: Case, variant: int) -> None:
        await asyncio.get_running_loop().run_in_executor(threads, run, case, variant)

    try:
        yield send
    finally:
        threads.shutdown()
        for conn in opened:
            conn.close()


def summary(latencies: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"p50_ms": round(percentile(values, 0.5), 2), "p99_ms": round(percentile(values, 0.99), 2),
                   "requests": len(values)} for name, values in latencies.items()}


def measure_size(ctx: Context, database: str, runs: int, seconds: float, rate: float) -> dict[str, Any]:
    alone_each = ctx.size(ALONE, 3)
    with ctx.served(database, f"reads-{runs}") as server:
        stored = prepare(server, database, runs)
        plan = asyncio.run(record(server.database_url, ctx.home(f"reads-{runs}-{database}"), cases(stored)))
        # Warm both sides (caches, prepared statements) before anything is measured.
        asyncio.run(load_http(server.url, plan, rate, min(seconds, 2.0)))
        asyncio.run(load_direct(database, server.database_url, plan, rate, min(seconds, 2.0)))
        print(f"   {DATABASE_NAMES[database]}, {runs:,} runs: seeded in {stored.seeded.seconds:g} s, tallied by the "
              f"server in {stored.tallied_seconds:g} s", flush=True)
        # One request at a time: what each endpoint costs by itself, whatever the load does to the queue.
        alone_seconds = len(plan) * alone_each / ALONE_RATE
        alone = {"taskyard": summary(asyncio.run(load_http(server.url, plan, ALONE_RATE, alone_seconds, 1))),
                 "direct": summary(asyncio.run(load_direct(database, server.database_url, plan, ALONE_RATE,
                                                           alone_seconds, 1)))}
        server_process = psutil.Process(server.process.pid)
        passes = []
        for _ in range(ctx.repeat):
            cpu, started = _cpu_seconds(server_process), time.perf_counter()
            latencies = asyncio.run(load_http(server.url, plan, rate, seconds))
            elapsed, requests = time.perf_counter() - started, sum(len(v) for v in latencies.values())
            load = {"served_per_second": round(requests / elapsed, 1), "requests": requests,
                    "server_cpu_ms_per_request": round((_cpu_seconds(server_process) - cpu) / requests * 1000, 2)}
            ours = summary(latencies)
            direct = summary(asyncio.run(load_direct(database, server.database_url, plan, rate, seconds)))
            passes.append({"taskyard": ours, "direct": direct, **load})
            worst = max(ours, key=lambda case: ours[case]["p99_ms"])
            print(f"   pass: {load['served_per_second']:g} requests/s served, server CPU "
                  f"{load['server_cpu_ms_per_request']:g} ms per request; worst p99 {ours[worst]['p99_ms']:g} ms "
                  f"({worst}; direct {direct[worst]['p99_ms']:g} ms)", flush=True)
        return {"runs": runs, "rate": rate, "seed_seconds": stored.seeded.seconds,
                "tally_seconds": stored.tallied_seconds, "alone": alone, "passes": passes,
                "server_rss_mb": tree_rss_mb(server.process.pid),
                "statements": {case.name: len(case.statements[0]) for case in plan}}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run(ctx: Context, report: Report, stored: int | None = None, rate: float = RATE) -> None:
    small = ctx.size(10_000, 200)
    large = stored or ctx.size(1_000_000, 2_000)
    seconds = 2.0 if ctx.smoke else SECONDS
    report.raw["reads"] = {"sizes": [small, large], "rate": rate, "seconds": seconds}
    for database in ctx.databases:
        started = time.perf_counter()
        at = {size: measure_size(ctx, database, size, seconds, rate) for size in (small, large)}
        raw = report.raw["reads"][database] = {"small": at[small], "large": at[large], "growth": {},
                                                "seconds": round(time.perf_counter() - started, 1)}
        add_figures(report, database, at[small], at[large], raw["growth"])


def add_figures(report: Report, database: str, small: dict[str, Any], large: dict[str, Any],
                growth: dict[str, dict[str, float]]) -> None:
    name = DATABASE_NAMES[database]
    driver = "psycopg" if database == "postgres" else "sqlite3"
    few, many = _count(small["runs"]), _count(large["runs"])

    def p(measured: dict[str, Any], side: str, case: str, q: str = "p99_ms") -> Measured:
        return Measured.of([r[side][case][q] for r in measured["passes"]])

    def alone(measured: dict[str, Any], side: str, case: str) -> float:
        return float(measured["alone"][side][case]["p50_ms"])

    for case in large["passes"][0]["taskyard"]:
        ours = p(large, "taskyard", case)
        growth[case] = {"loaded_p99": round(ours.median / max(p(small, "taskyard", case).median, 0.01), 2),
                        "alone_p50": round(alone(large, "taskyard", case) / max(alone(small, "taskyard", case), 0.01),
                                           2)}
        note = (f"p50 {p(large, 'taskyard', case, 'p50_ms').median:g} vs {p(large, 'direct', case, 'p50_ms').median:g}"
                f"; alone p50 {alone(large, 'taskyard', case):g} vs {alone(large, 'direct', case):g}"
                f"; {few}: p99 {p(small, 'taskyard', case).median:g} vs {p(small, 'direct', case).median:g}"
                f", alone p50 {alone(small, 'taskyard', case):g} vs {alone(small, 'direct', case):g}"
                f"; {many}/{few}: p99 {growth[case]['loaded_p99']:g}x, alone {growth[case]['alone_p50']:g}x")
        report.add(Figure("reads", f"{name} {case} p99", "ms", ours, f"same SQL direct ({driver})",
                          p(large, "direct", case), better="lower", note=note))
    worst = max(growth, key=lambda case: growth[case]["alone_p50"])
    served = Measured.of([r["served_per_second"] for r in large["passes"]])
    cpu = [[r["server_cpu_ms_per_request"] for r in measured["passes"]] for measured in (large, small)]
    report.add(Figure("reads", f"{name} server CPU per request, {many}", "ms", Measured.of(cpu[0]),
                      f"same server, {few} runs", Measured.of(cpu[1]), better="lower",
                      note=f"served {served.median:g} of {large['rate']:g} requests/s"))
    report.add(Figure("reads", f"{name} server RSS, {many} runs", "MB", Measured.of([large["server_rss_mb"]]),
                      f"same server, {few} runs", Measured.of([small["server_rss_mb"]]), better="lower",
                      note=f"largest growth alone {growth[worst]['alone_p50']:g}x ({worst})"))


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
