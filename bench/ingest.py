"""Tracking ingestion benchmark: how fast a real server takes tracking events, batched and one by one.

    python -m bench.ingest --events 50000

For SQLite and PostgreSQL (a fresh database each), a real `taskyard server` is started and a run is
triggered (no worker: events are accepted for a run in any status). Then:

- batched: N events of the SDK's mix (progress, stage progress, logs, metrics, plain milestones) in
  `POST /api/tracking/batch` requests of 1000, from 4 concurrent httpx clients → events/s;
- naive: 2,000 events, one `POST /api/tracking/event` each, from the same 4 clients → events/s, and
  the ratio batched / naive;
- visibility: from sending one event to seeing it in `GET /api/tracking/runs/{id}/events` (polled
  every 2 ms), p50 over 20 tries, on a second run so the list stays short.

Every interpreted event also lands in its table (runs.progress, run_stages, run_logs, run_samples) in
the same transaction, so these figures include that work. Results go to bench/results/ingest-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench import _procs

RESULTS = Path(__file__).parent / "results"
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
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while True:
                try:
                    batch = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                response = await http.post("/api/tracking/batch", content=batch, headers=JSON_HEADERS)
                response.raise_for_status()
                accepted += int(response.json()["accepted"])

    server = psutil.Process(server_pid)
    cpu_before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    seconds = time.perf_counter() - started
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    assert accepted == n, (accepted, n)
    # Server CPU per event is steadier than wall time on a shared machine; both are reported.
    return {"events": n, "seconds": round(seconds, 3), "events_per_second": round(n / seconds, 1),
            "server_cpu_us_per_event": round(cpu / n * 1e6, 1)}


async def naive(url: str, run_id: str, n: int) -> dict[str, float]:
    events = make_events(run_id, n, offset=10**6)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while True:
                try:
                    event = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                (await http.post("/api/tracking/event", json=event)).raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    seconds = time.perf_counter() - started
    return {"events": n, "seconds": round(seconds, 3), "events_per_second": round(n / seconds, 1)}


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


def run_database(database: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    home = root / database
    with _procs.database_for(database, args.postgres_url) as url_db:
        server, url = _procs.start_server(home, url_db)
        try:
            run_id = trigger_run(url, "ingest")
            runs = [asyncio.run(batched(url, run_id, args.events, server.pid)) for _ in range(args.repeat)]
            result: dict[str, Any] = {"batched": _median(runs), "batched_runs": runs}
            result["naive"] = asyncio.run(naive(url, trigger_run(url, "ingest-naive"), args.naive_events))
            result["ratio"] = round(result["batched"]["events_per_second"]
                                    / result["naive"]["events_per_second"], 1)
            result["visibility"] = visibility(url, trigger_run(url, "ingest-probe"), VISIBILITY_TRIES)
            return result
        finally:
            _procs.stop(server)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The repetition with the median rate, and the spread of the rates."""
    ordered = sorted(runs, key=lambda r: r["events_per_second"])
    rates = [r["events_per_second"] for r in ordered]
    return {**ordered[len(ordered) // 2], "min_events_per_second": rates[0], "max_events_per_second": rates[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--naive-events", type=int, default=NAIVE_EVENTS)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the batched run; the median is kept")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    report: dict[str, Any] = {"args": vars(args), "batch": BATCH, "clients": CLIENTS, "taskyard": {}}
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as tmp:
        for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
            report["taskyard"][database] = run_database(database, args, Path(tmp))
    print_table(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{'database':<12}{'batched ev/s':>14}{'spread':>18}{'cpu us/ev':>11}{'one-by-one ev/s':>17}"
          f"{'ratio':>8}{'visible p50 ms':>16}")
    for database, result in report["taskyard"].items():
        batch = result["batched"]
        spread = f"{batch['min_events_per_second']:.0f}-{batch['max_events_per_second']:.0f}"
        print(f"{database:<12}{batch['events_per_second']:>14}{spread:>18}{batch['server_cpu_us_per_event']:>11}"
              f"{result['naive']['events_per_second']:>17}{str(result['ratio']) + 'x':>8}"
              f"{result['visibility']['p50_ms']:>16}")


if __name__ == "__main__":
    main()
