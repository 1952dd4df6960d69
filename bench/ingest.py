"""Ingestion: how fast a real server takes tracking events, against the physical limit and the naive way.

    python -m bench ingest [--events 50000]

For SQLite and PostgreSQL (a fresh database each), a real `taskyard server` is started and a run is
triggered (no worker: events are accepted for a run in any status). Then:

- batched: N events of the SDK's mix (progress, stage progress, logs, metrics, plain milestones) in
  `POST /api/tracking/batch` requests of 1000, encoded before the clock starts, from 4 concurrent
  httpx clients → events/s, and the server's CPU time per event (steadier than wall time here);
- direct: the same rows (each event, and the log line or sample it means) written straight into the
  same database by its driver, one transaction per 1000 events: the physical limit;
- naive: 2,000 events, one `POST /api/tracking/event` each, from the same 4 clients → events/s;
- visibility: from sending one event to seeing it in `GET /api/tracking/runs/{id}/events` (polled
  every 2 ms), p50 over 20 tries, on a second run so the list stays short.

Every interpreted event also lands in its table (runs.progress, run_stages, run_logs, run_samples) in
the same transaction, so the batched figures include that work.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench import _procs
from bench._context import DATABASE_NAMES, Context
from bench._report import Figure, Measured, Report

BATCH = 1000
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
NAIVE_EVENTS = 2000
VISIBILITY_TRIES = 20
STAGES = ("Load", "Transform", "Analyse", "Save")
JSON_HEADERS = {"content-type": "application/json"}


def make_events(run_id: str, n: int, offset: int = 0) -> list[dict[str, Any]]:
    """The SDK's mix: 20% progress, 30% stage progress, 30% logs, 10% metrics, 10% milestones."""
    now = datetime.now(UTC).isoformat()
    events: list[dict[str, Any]] = []
    for k in range(offset, offset + n):
        stage = STAGES[k % len(STAGES)]
        kind = k % 10
        if kind < 2:
            name, data = "progress", {"percentage": (k % 1000) / 10, "message": f"step {k}"}
        elif kind < 5:
            name, data = "stage_progress", {"stage": stage, "order": k % len(STAGES) + 1,
                                            "recordsProcessed": k, "totalRecords": 10 * n}
        elif kind < 8:
            name, data = "log", {"level": "info", "message": f"processed record {k}", "component": "Bench",
                                 "stage": stage, "details": {"k": k}}
        elif kind < 9:
            name, data = "metric", {"name": "records_per_second", "value": float(k), "unit": "rps"}
        else:
            name, data = "milestone", {"k": k}
        events.append({"runId": run_id, "functionName": "bench", "eventName": name, "data": data,
                       "timestamp": now})
    return events


def trigger_run(url: str, name: str) -> str:
    task = httpx.post(f"{url}/api/tasks", json={"name": name, "task_type": "shell", "command": "true",
                                                "retry_count": 0}, timeout=30).json()
    run = httpx.post(f"{url}/api/tasks/{task['data']['id']}/trigger", json={}, timeout=30).json()
    return str(run["data"]["run_id"])


async def batched(url: str, run_id: str, n: int, server_pid: int) -> dict[str, float]:
    stages = [{"runId": run_id, "functionName": "bench", "eventName": "stage_start",
               "data": {"stage": s, "order": i + 1, "totalRecords": 10 * n}} for i, s in enumerate(STAGES)]
    httpx.post(f"{url}/api/tracking/batch", json={"events": stages}, timeout=60).raise_for_status()
    # Encoded before the clock starts: the clients share the machine with the server, and their JSON
    # encoding is not the server's work.
    batches = [orjson.dumps({"events": make_events(run_id, min(BATCH, n - start), start)})
               for start in range(0, n, BATCH)]
    server = psutil.Process(server_pid)
    cpu_before = sum(server.cpu_times()[:2])
    seconds, answers = await post_all(url, "/api/tracking/batch", batches)
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    accepted = sum(int(orjson.loads(answer)["accepted"]) for answer in answers)
    assert accepted == n, (accepted, n)
    # Server CPU per event is steadier than wall time on a shared machine; both are reported.
    return {"events": n, "seconds": round(seconds, 3), "events_per_second": round(n / seconds, 1),
            "server_cpu_us_per_event": round(cpu / n * 1e6, 1)}


async def naive(url: str, run_id: str, n: int) -> dict[str, float]:
    bodies = [orjson.dumps(event) for event in make_events(run_id, n, offset=10**6)]
    seconds, _ = await post_all(url, "/api/tracking/event", bodies)
    return {"events": n, "seconds": round(seconds, 3), "events_per_second": round(n / seconds, 1)}


async def post_all(url: str, path: str, bodies: list[bytes]) -> tuple[float, list[bytes]]:
    """POST every body from CLIENTS concurrent clients; the seconds it took and the answers."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    answers: list[bytes] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while not queue.empty():
                response = await http.post(path, content=queue.get_nowait(), headers=JSON_HEADERS)
                response.raise_for_status()
                answers.append(response.content)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return time.perf_counter() - started, answers


def visibility(url: str, run_id: str, tries: int) -> dict[str, float]:
    delays: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(tries):
            name = f"probe-{i}"
            started = time.perf_counter()
            http.post("/api/tracking/event", json={"runId": run_id, "functionName": "bench", "eventName": name,
                                                   "data": {"i": i}}).raise_for_status()
            deadline = started + 10
            while time.perf_counter() < deadline:
                events = http.get(f"/api/tracking/runs/{run_id}/events").json()
                if any(e["eventName"] == name for e in events):
                    delays.append((time.perf_counter() - started) * 1000)
                    break
                time.sleep(0.002)
            else:
                raise RuntimeError(f"event {name} not visible after 10 s")
    return {"p50_ms": round(statistics.median(delays), 2), "max_ms": round(max(delays), 2), "tries": len(delays)}


def direct_rows(run_id: int, events: list[dict[str, Any]], *, sqlite: bool) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the server stores for these events (each event, and the log line or sample it means),
    as the database takes them: JSON as text; UTC timestamps as SQLite's text ("YYYY-MM-DD HH:MM:SS.ffffff")
    or as ISO text that PostgreSQL's COPY reads into timestamptz."""
    rows: dict[str, list[tuple[Any, ...]]] = {"run_events": [], "run_logs": [], "run_samples": []}
    for event in events:
        at = event["timestamp"]
        if sqlite:
            at = f"{at[:10]} {at[11:26]}"
        data = event["data"]
        rows["run_events"].append((run_id, 1, event["eventName"], orjson.dumps(data).decode(), at))
        if event["eventName"] == "log":
            rows["run_logs"].append((run_id, 1, at, data["level"], "sdk", data["message"], data["component"],
                                     data["stage"], orjson.dumps(data["details"]).decode()))
        elif event["eventName"] == "metric":
            rows["run_samples"].append((run_id, data["name"], data["value"], data["unit"], "task", at))
    return rows


COLUMNS = {"run_events": ("run_id", "project_id", "name", "data", "timestamp"),
           "run_logs": ("run_id", "attempt", "timestamp", "level", "stream", "message", "component", "stage",
                        "details"),
           "run_samples": ("run_id", "name", "value", "unit", "source", "timestamp")}


def direct(database: str, url_db: str | None, home: Path, run_id: int, n: int) -> dict[str, float]:
    """The physical limit: the same rows written straight into the database by its driver in transactions
    of one batch each (COPY on PostgreSQL, executemany on SQLite), no server in between."""
    batches = [direct_rows(run_id, make_events(str(run_id), min(BATCH, n - start), start),
                           sqlite=database != "postgres") for start in range(0, n, BATCH)]
    if database == "postgres":
        import psycopg

        assert url_db is not None
        with psycopg.connect(url_db) as conn:
            started = time.perf_counter()
            for batch in batches:
                with conn.cursor() as cursor:
                    for table, rows in batch.items():
                        names = ", ".join(f'"{c}"' for c in COLUMNS[table])
                        with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
                conn.commit()
            seconds = time.perf_counter() - started
    else:
        import sqlite3

        conn = sqlite3.connect(home / "taskyard.db", isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            started = time.perf_counter()
            for batch in batches:
                conn.execute("BEGIN IMMEDIATE")
                for table, rows in batch.items():
                    marks = ", ".join("?" for _ in COLUMNS[table])
                    names = ", ".join(f'"{c}"' for c in COLUMNS[table])
                    conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
                conn.execute("COMMIT")
            seconds = time.perf_counter() - started
        finally:
            conn.close()
    return {"events": n, "seconds": round(seconds, 3), "events_per_second": round(n / seconds, 1)}


def run_database(ctx: Context, database: str, events: int, naive_events: int) -> dict[str, Any]:
    home = ctx.home(f"ingest-{database}")
    with _procs.database_for(database, ctx.postgres_url) as url_db:
        server, url = _procs.start_server(home, url_db)
        try:
            run_id = trigger_run(url, "ingest")
            result: dict[str, Any] = {
                "batched": [asyncio.run(batched(url, run_id, events, server.pid)) for _ in range(ctx.repeat)]}
            result["direct"] = [direct(database, url_db, home, int(run_id), events) for _ in range(ctx.repeat)]
            result["naive"] = asyncio.run(naive(url, trigger_run(url, "ingest-naive"), naive_events))
            result["visibility"] = visibility(url, trigger_run(url, "ingest-probe"), VISIBILITY_TRIES)
            return result
        finally:
            _procs.stop(server)


def run(ctx: Context, report: Report, events: int | None = None) -> None:
    events = events or ctx.size(50_000, 500)
    naive_events = ctx.size(NAIVE_EVENTS, 20)
    report.raw["ingest"] = {"events": events, "batch": BATCH, "clients": CLIENTS}
    for database in ctx.databases:
        result = run_database(ctx, database, events, naive_events)
        report.raw["ingest"][database] = result
        ours = Measured.of([r["events_per_second"] for r in result["batched"]])
        name = DATABASE_NAMES[database]
        cpu = statistics.median(r["server_cpu_us_per_event"] for r in result["batched"])
        report.add(Figure("ingest", f"{name} batch endpoint vs direct", "events/s", ours,
                          "bulk insert straight into the db",
                          Measured.of([r["events_per_second"] for r in result["direct"]]),
                          note=f"server CPU {cpu} us/event"))
        report.add(Figure("ingest", f"{name} batch endpoint vs naive", "events/s", ours,
                          "one request per event", Measured.of([result["naive"]["events_per_second"]])))
        report.add(Figure("ingest", f"{name} sent to visible p50", "ms",
                          Measured.of([result["visibility"]["p50_ms"]]), better="lower"))
