"""End-to-end benchmark: N no-op shell runs enqueued and drained by real workers, on SQLite and
PostgreSQL, beside Celery (Redis broker) running the same no-op shell command in the same invocation.

    python -m bench.e2e --runs 2000 --workers 2 --concurrency 8

Prints runs/s for each system and the ratio to Celery, then trigger-to-start latency p50/p99 with idle
workers (runs triggered one at a time). Figures vary between machines and runs: compare ratios, not
absolute numbers. Results are also written to bench/results/e2e-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench import _procs
from bench.peers import celery_peer

RESULTS = Path(__file__).parent / "results"


async def enqueue(url: str, task_id: int, n: int, in_flight: int = 32) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        semaphore = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with semaphore:
                (await client.post(f"/api/tasks/{task_id}/trigger", json={})).raise_for_status()

        await asyncio.gather(*(one() for _ in range(n)))


def count(url: str, status: str) -> int:
    body = httpx.get(f"{url}/api/runs", params={"status": status, "size": 1}, timeout=30).json()
    return int(body["data"]["total"])


def create_noop(url: str, name: str) -> int:
    body = httpx.post(f"{url}/api/tasks", json={"name": name, "task_type": "shell", "command": "true",
                                                 "retry_count": 0}, timeout=30).json()
    return int(body["data"]["id"])


def throughput(url: str, home: Path, runs: int, workers: int, concurrency: int) -> dict[str, float]:
    task_id = create_noop(url, "noop")
    asyncio.run(enqueue(url, task_id, runs))
    procs = [_procs.start_worker(url, home, f"bench-{i}", concurrency) for i in range(workers)]
    try:
        started = time.perf_counter()
        deadline = started + max(120, runs / 5)
        done = 0
        while time.perf_counter() < deadline:
            done = count(url, "completed") + count(url, "failed")
            if done >= runs:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            _procs.stop(proc)
    failed = count(url, "failed")
    return {"runs": runs, "seconds": round(elapsed, 3), "runs_per_second": round(done / elapsed, 1),
            "failed": failed}


def latency(url: str, home: Path, samples: int, rate: float) -> dict[str, float]:
    task_id = create_noop(url, "latency")
    proc = _procs.start_worker(url, home, "latency", 4)
    run_ids: list[int] = []
    try:
        time.sleep(1.5)  # registered and long-polling
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(samples):
                run_ids.append(client.post(f"/api/tasks/{task_id}/trigger", json={}).json()["data"]["run_id"])
                time.sleep(1 / rate)
            deadline = time.monotonic() + 60
            waits: list[float] = []
            for run_id in run_ids:
                while time.monotonic() < deadline:
                    run = client.get(f"/api/runs/{run_id}").json()["data"]
                    if run["started_at"]:
                        created = datetime.fromisoformat(run["created_at"])
                        begun = datetime.fromisoformat(run["started_at"])
                        waits.append((begun - created).total_seconds() * 1000)
                        break
                    time.sleep(0.05)
    finally:
        _procs.stop(proc)
    return percentiles(waits)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": 0}
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2), "samples": len(ordered)}


def run_taskyard(database: str, args: argparse.Namespace, root: Path) -> dict[str, object]:
    home = root / database
    with _procs.database_for(database, args.postgres_url) as url_db:
        server, url = _procs.start_server(home, url_db)
        try:
            result: dict[str, object] = {
                "throughput": throughput(url, home, args.runs, args.workers, args.concurrency)}
            result["latency"] = latency(url, home, args.latency_samples, args.latency_rate)
            return result
        finally:
            _procs.stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--latency-rate", type=float, default=20.0)
    parser.add_argument("--no-peer", action="store_true", help="skip Celery (smoke runs)")
    args = parser.parse_args()

    report: dict[str, object] = {"args": vars(args), "taskyard": {}}
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as tmp:
        root = Path(tmp)
        for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
            report["taskyard"][database] = run_taskyard(database, args, root)  # type: ignore[index]
        if not args.no_peer:
            report["celery"] = celery_peer.run(root / "celery", runs=args.runs, workers=args.workers,
                                               concurrency=args.concurrency)
    print_table(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")


def print_table(report: dict[str, object]) -> None:
    celery = report.get("celery") or {}
    peer_rate = celery.get("runs_per_second") if isinstance(celery, dict) else None
    print(f"\n{'system':<22}{'runs/s':>10}{'vs celery':>11}{'start p50 ms':>14}{'start p99 ms':>14}")
    for database, result in report["taskyard"].items():  # type: ignore[attr-defined]
        rate = result["throughput"]["runs_per_second"]
        ratio = f"{rate / peer_rate:.2f}x" if peer_rate else "-"
        lat = result["latency"]
        print(f"{'taskyard ' + database:<22}{rate:>10}{ratio:>11}{lat['p50_ms']:>14}{lat['p99_ms']:>14}")
    if isinstance(celery, dict) and celery:
        print(f"{'celery (redis, prefork)':<22}{celery['runs_per_second']:>10}{'1.00x':>11}{'-':>14}{'-':>14}")


if __name__ == "__main__":
    main()
