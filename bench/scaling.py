"""Scaling: throughput with 1, 2 and 4 workers on one API server, and with 1 and 2 API servers, all on one
PostgreSQL, beside the single-worker, single-server figure measured in the same invocation.

Each configuration drains the same number of no-op runs (enqueued first, spread over the servers), and
also reports the CPU each part spent per run (servers, workers with their runs' processes, PostgreSQL's
backends), so the table shows where the cost goes as the system grows, not only the rate. Every process
shares this machine's cores, so on a 2-core machine more processes mostly show the cost of contention:
the figures say how the work divides, the ratio how the rate grows.

    python -m bench scaling [--runs 3000] [--repeat 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import psutil

from bench import _procs
from bench._context import Context
from bench._report import Figure, Measured, Report
from bench.throughput import create_noop, enqueue, wait_drained

# (API servers, workers): each worker talks to one server, round robin.
CONFIGURATIONS = ((1, 1), (1, 2), (1, 4), (2, 2), (2, 4))
WORKER_CONCURRENCY = 8


@contextlib.contextmanager
def servers_on_one_database(ctx: Context, n: int, name: str) -> Iterator[tuple[list[str], list[Any]]]:
    """`n` taskyard servers sharing one fresh PostgreSQL database (they elect one scheduler leader)."""
    with _procs.database_for("postgres", ctx.postgres_url) as database_url:
        started: list[tuple[Any, str]] = []
        try:
            for i in range(n):
                started.append(_procs.start_server(ctx.home(f"{name}-server-{i}"), database_url))
            yield [url for _, url in started], [proc for proc, _ in started]
        finally:
            for proc, _ in started:
                _procs.stop(proc)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


class BackendCpu:
    """CPU of the benchmark database's PostgreSQL backends, sampled while they live: a backend that exits
    takes its counters with it, so each one's last reading is kept (and one born later starts from zero)."""

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample()
        self.start = dict(self.last)

    def sample(self) -> None:
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] in ("postgres", "postmaster") and "taskyard_bench" in " ".join(
                    process.info["cmdline"] or []):
                self.last[process.pid] = cpu_seconds([process])

    def spent(self) -> float:
        return sum(seconds - self.start.get(pid, 0.0) for pid, seconds in self.last.items())


def measure(ctx: Context, servers: int, workers: int, runs: int) -> dict[str, float]:
    home = ctx.home(f"scaling-{servers}x{workers}")
    with servers_on_one_database(ctx, servers, f"scaling-{servers}x{workers}") as (urls, procs):
        task_id = create_noop(urls[0], "noop")
        share = [runs // servers + (1 if i < runs % servers else 0) for i in range(servers)]

        async def enqueue_all() -> None:
            await asyncio.gather(*(enqueue(url, task_id, n) for url, n in zip(urls, share, strict=True)))

        asyncio.run(enqueue_all())
        server_procs = [psutil.Process(p.pid) for p in procs]
        backends = BackendCpu()
        before = cpu_seconds(server_procs)
        launched = time.time()
        worker_procs = [_procs.start_worker(urls[i % servers], home, f"w{i}", WORKER_CONCURRENCY)
                        for i in range(workers)]
        watched = [psutil.Process(p.pid) for p in worker_procs]
        try:
            # The servers' pooled backends live long, so sampling them once a second is enough; a scan of
            # every process is not free.
            polls = itertools.count()

            def sample_now_and_then() -> None:
                if next(polls) % 4 == 0:
                    backends.sample()

            done, _, elapsed = wait_drained(urls[0], task_id, runs, launched, sample_now_and_then)
            backends.sample()
            spent = {"servers": cpu_seconds(server_procs) - before, "postgres": backends.spent(),
                     "workers": cpu_seconds(watched)}
        finally:
            for proc in worker_procs:
                _procs.stop(proc)
        if done < runs:
            raise RuntimeError(f"{servers} servers, {workers} workers: only {done} of {runs} runs in {elapsed:.0f} s")
        # The workers' own CPU and their runs' processes: children are counted once each has been reaped.
        return {"runs": runs, "seconds": round(elapsed, 3), "runs_per_second": round(runs / elapsed, 1),
                **{f"{part}_cpu_ms_per_run": round(seconds * 1000 / runs, 2) for part, seconds in spent.items()}}


def run(ctx: Context, report: Report, runs: int | None = None) -> None:
    if "postgres" not in ctx.databases:
        print("scaling needs PostgreSQL (it shares one database between servers): skipped")
        return
    runs = runs or ctx.size(3000, 30)
    configurations = CONFIGURATIONS[:2] + CONFIGURATIONS[3:4] if ctx.smoke else CONFIGURATIONS
    results: dict[str, list[dict[str, float]]] = {}
    for servers, workers in configurations:
        results[f"{servers}x{workers}"] = [measure(ctx, servers, workers, runs) for _ in range(ctx.repeat)]
    report.raw["scaling"] = {"runs": runs, "worker_concurrency": WORKER_CONCURRENCY, "results": results}
    baseline = Measured.of([r["runs_per_second"] for r in results["1x1"]])
    for key, measured in results.items():
        servers, workers = (int(part) for part in key.split("x"))
        cost = {part: Measured.of([r[f"{part}_cpu_ms_per_run"] for r in measured]).median
                for part in ("servers", "workers", "postgres")}
        note = ", ".join(f"{part} {ms:g} ms CPU/run" for part, ms in cost.items())
        report.add(Figure("scaling", f"PostgreSQL, {servers} server(s), {workers} worker(s)", "runs/s",
                          Measured.of([r["runs_per_second"] for r in measured]), "taskyard, 1 server, 1 worker",
                          baseline, note=note))

