"""Latency: runs triggered one at a time at a fixed rate with idle workers; trigger-to-start p50 and p99.

For taskyard, "start" is the moment the task's own command is running: its first line of output, as the
worker timestamps it (the run's process spawn included), measured from just before the trigger request
was sent. For Celery, the moment the task's body begins, measured from just before `apply_async`.
Everything runs on one machine, so one clock serves both ends.

    python -m bench latency [--rate 100] [--samples 1000]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx

from bench import _procs
from bench._context import DATABASE_NAMES, Context
from bench._report import Figure, Measured, Report, percentile
from bench.peers import celery_peer
from bench.throughput import create_noop

IDLE_CONCURRENCY = int(__import__("os").environ.get("BENCH_IDLE_CONCURRENCY", "4"))


def taskyard(ctx: Context, database: str, samples: int, rate: float) -> list[dict[str, float]]:
    results = []
    with ctx.server(database, "latency") as url:
        task_id = create_noop(url, "started", command="echo started")
        worker = _procs.start_worker(url, ctx.home(f"latency-{database}"), "latency", IDLE_CONCURRENCY)
        try:
            wait_for_worker(url)
            for _ in range(ctx.repeat):
                results.append(one_pass(url, task_id, samples, rate))
        finally:
            _procs.stop(worker)
    return results


def wait_for_worker(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = httpx.get(f"{url}/api/workers", timeout=10).json()["data"]["items"]
        if any(w["status"] == "active" for w in workers):
            time.sleep(0.5)  # registered, and now inside its long poll
            return
        time.sleep(0.1)
    raise RuntimeError("the worker did not register in 30 s")


def one_pass(url: str, task_id: int, samples: int, rate: float) -> dict[str, float]:
    sent: dict[int, float] = {}
    interval = 1.0 / rate
    with httpx.Client(base_url=url, timeout=30) as client:
        next_at = time.monotonic()
        for _ in range(samples):
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
            at = time.time()
            run_id = client.post(f"/api/tasks/{task_id}/trigger", json={}).json()["data"]["run_id"]
            sent[run_id] = at
        waits = [(first_output(client, run_id) - at) * 1000 for run_id, at in sent.items()]
    return {"p50_ms": round(percentile(waits, 0.5), 2), "p99_ms": round(percentile(waits, 0.99), 2),
            "samples": len(waits)}


def first_output(client: httpx.Client, run_id: int) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = client.get(f"/api/runs/{run_id}/logs", params={"limit": 1}).json()["data"]["items"]
        if lines:
            at = datetime.fromisoformat(lines[0]["timestamp"])
            return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
        time.sleep(0.02)
    raise RuntimeError(f"run {run_id} printed nothing in 60 s")


def run(ctx: Context, report: Report, samples: int | None = None, rate: float = 100.0) -> None:
    samples = samples or ctx.size(1000, 10)
    celery = [celery_peer.latency(ctx.home("celery-latency"), samples=samples, rate=rate,
                                  concurrency=IDLE_CONCURRENCY) for _ in range(ctx.repeat)]
    report.raw["latency"] = {"samples": samples, "rate": rate, "celery": celery, "taskyard": {}}
    for database in ctx.databases:
        ours = taskyard(ctx, database, samples, rate)
        report.raw["latency"]["taskyard"][database] = ours
        for q in ("p50_ms", "p99_ms"):
            report.add(Figure("latency", f"{DATABASE_NAMES[database]} {q[:3]} at {rate:g}/s", "ms",
                              Measured.of([r[q] for r in ours]), "Celery prefork + Redis",
                              Measured.of([r[q] for r in celery]), better="lower"))
