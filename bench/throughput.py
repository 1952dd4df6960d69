"""Throughput: N no-op runs enqueued in bulk, then drained by workers of the same concurrency.

taskyard on PostgreSQL and on SQLite (each run durably recorded with its status history, which is
checked after the drain) beside Celery 5 with Redis (prefork and threads pools) and Procrastinate on
PostgreSQL, every task running the same no-op shell command (`true`).

    python -m bench throughput [--runs 20000] [--repeat 3]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import _procs
from bench._context import DATABASE_NAMES, Context
from bench._report import Figure, Measured, Report
from bench.peers import celery_peer, procrastinate_peer

TRIGGERS_IN_FLIGHT = 64
POLL_SECONDS = 0.25


def create_noop(url: str, name: str, command: str = "true") -> int:
    body = httpx.post(f"{url}/api/tasks", json={"name": name, "task_type": "shell", "command": command,
                                                 "retry_count": 0}, timeout=30).json()
    return int(body["data"]["id"])


async def enqueue(url: str, task_id: int, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        semaphore = asyncio.Semaphore(TRIGGERS_IN_FLIGHT)

        async def one() -> None:
            async with semaphore:
                (await client.post(f"/api/tasks/{task_id}/trigger", json={})).raise_for_status()

        await asyncio.gather(*(one() for _ in range(n)))


def count(client: httpx.Client, status: str, task_id: int) -> int:
    body = client.get("/api/runs", params={"status": status, "task_id": task_id, "size": 1}).json()
    if "data" not in body:
        raise RuntimeError(f"GET /api/runs answered {body}")
    return int(body["data"]["total"])


def last_finished(client: httpx.Client, task_id: int) -> float:
    """When the task's last run finished, as the server stamped it (wall clock, seconds)."""
    stamps = []
    for status in ("completed", "failed"):
        items = client.get("/api/runs", params={"status": status, "task_id": task_id, "size": 1,
                                                "sort": "completed_at", "order": "desc"}).json()["data"]["items"]
        stamps += [datetime.fromisoformat(item["completed_at"]).timestamp() for item in items if item["completed_at"]]
    return max(stamps)


def wait_drained(url: str, task_id: int, runs: int, launched: float,
                 while_waiting: Callable[[], None] | None = None) -> tuple[int, int, float]:
    """Waits until `runs` of the task's runs are final; returns how many are, how many of them failed, and
    the seconds from `launched` (wall clock) to the last one's completion as the server stamped it.

    The clock's end comes from the stored runs, not from when this loop noticed, so the loop can poll rarely:
    the peers' drivers block on their broker while they wait, and a driver that polled hard would take CPU
    from the system it measures on a machine this small."""
    deadline = time.monotonic() + max(120, runs / 5)
    done = failed = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            failed = count(client, "failed", task_id)
            done = count(client, "completed", task_id) + failed
            if done >= runs:
                return done, failed, last_finished(client, task_id) - launched
            if while_waiting is not None:
                while_waiting()
            time.sleep(POLL_SECONDS)
    return done, failed, time.time() - launched


def drain(url: str, home: Path, task_id: int, runs: int, workers: int, concurrency: int) -> dict[str, float]:
    """Start the workers once every run is queued; runs/s from their launch until the last run finished."""
    launched = time.time()
    procs = [_procs.start_worker(url, home, f"bench-{task_id}-{i}", concurrency) for i in range(workers)]
    try:
        done, failed, elapsed = wait_drained(url, task_id, runs, launched)
    finally:
        for proc in procs:
            _procs.stop(proc)
    if done < runs:
        raise RuntimeError(f"only {done} of {runs} runs finished in {elapsed:.0f} s")
    return {"runs": runs, "seconds": round(elapsed, 3), "runs_per_second": round(runs / elapsed, 1),
            "failed": failed}


def check_recorded(url: str, task_id: int) -> None:
    """Every run is stored with its status history: the last one's history is queued, running, completed."""
    body = httpx.get(f"{url}/api/runs", params={"task_id": task_id, "size": 1, "sort": "id", "order": "desc"},
                     timeout=30).json()
    run_id = body["data"]["items"][0]["id"]
    run = httpx.get(f"{url}/api/runs/{run_id}", timeout=30).json()["data"]
    statuses = [entry["status"] for entry in run["history"]]
    if statuses != ["queued", "running", "completed"]:
        raise RuntimeError(f"run {run_id} history is {statuses}")


def taskyard(ctx: Context, database: str, runs: int) -> list[dict[str, float]]:
    results = []
    with ctx.server(database, "throughput") as url:
        for attempt in range(ctx.repeat):
            task_id = create_noop(url, f"noop-{attempt}")
            asyncio.run(enqueue(url, task_id, runs))
            results.append(drain(url, ctx.home(f"throughput-{database}"), task_id, runs, ctx.workers,
                                 ctx.concurrency))
            check_recorded(url, task_id)
    return results


def rates(results: list[dict[str, Any]]) -> Measured:
    return Measured.of([r["runs_per_second"] for r in results])


def run(ctx: Context, report: Report, runs: int | None = None) -> None:
    runs = runs or ctx.size(20_000, 40)
    celery = {pool: [celery_peer.throughput(ctx.home(f"celery-{pool}"), runs=runs, workers=ctx.workers,
                                            concurrency=ctx.concurrency, pool=pool) for _ in range(ctx.repeat)]
              for pool in ("prefork", "threads")}
    best_pool = max(celery, key=lambda pool: rates(celery[pool]).median)
    procrastinate = [procrastinate_peer.throughput(ctx.home("procrastinate"), postgres_url=ctx.postgres_url,
                                                   runs=runs, workers=ctx.workers, concurrency=ctx.concurrency)
                     for _ in range(ctx.repeat)]
    report.raw["throughput"] = {"runs": runs, "celery": celery, "procrastinate": procrastinate, "taskyard": {}}
    for database in ctx.databases:
        ours = taskyard(ctx, database, runs)
        report.raw["throughput"]["taskyard"][database] = ours
        name = DATABASE_NAMES[database]
        report.add(Figure("throughput", f"{name} vs best Celery", "runs/s", rates(ours),
                          f"Celery {best_pool} + Redis", rates(celery[best_pool])))
        if database == "postgres":
            report.add(Figure("throughput", f"{name} vs Procrastinate", "runs/s", rates(ours),
                              "Procrastinate (PostgreSQL)", rates(procrastinate)))
    for pool in celery:
        if pool != best_pool:
            report.raw["throughput"][f"celery_{pool}_median"] = rates(celery[pool]).median
