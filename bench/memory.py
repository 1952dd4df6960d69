"""Memory: the resident memory of an idle worker beside an idle Celery worker of the same concurrency.

Both are measured as whole process trees (a Celery prefork worker is a parent and one child per slot;
a taskyard worker is one process until it runs something).

    python -m bench memory
"""

from __future__ import annotations

import time

import psutil

from bench import _procs
from bench._context import Context
from bench._report import Figure, Measured, Report
from bench.latency import wait_for_worker
from bench.peers import celery_peer

IDLE_SECONDS = 2.0


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    members = [root, *root.children(recursive=True)]
    total = 0
    for proc in members:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 2)


def idle_worker(ctx: Context) -> dict[str, float]:
    with ctx.server("sqlite", "memory") as url:
        worker = _procs.start_worker(url, ctx.home("memory"), "idle", ctx.concurrency)
        try:
            wait_for_worker(url)
            time.sleep(IDLE_SECONDS)
            return {"rss_mb": tree_rss_mb(worker.pid)}
        finally:
            _procs.stop(worker)


def run(ctx: Context, report: Report) -> None:
    ours = [idle_worker(ctx) for _ in range(ctx.repeat)]
    celery = [celery_peer.idle_memory(ctx.home("celery-memory"), concurrency=ctx.concurrency)
              for _ in range(ctx.repeat)]
    report.raw["memory"] = {"taskyard_worker": ours, "celery_worker": celery}
    report.add(Figure("memory", f"idle worker, concurrency {ctx.concurrency}", "MB RSS",
                      Measured.of([r["rss_mb"] for r in ours]), "Celery prefork worker",
                      Measured.of([r["rss_mb"] for r in celery]), better="lower"))
    report.add(Figure("memory", "idle worker vs Celery's parent alone", "MB RSS",
                      Measured.of([r["rss_mb"] for r in ours]), "Celery parent process",
                      Measured.of([r["main_rss_mb"] for r in celery]), better="lower"))
