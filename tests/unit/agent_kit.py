"""The worker agent's test kit: an in-memory fake of the server's worker protocol (httpx.MockTransport)
and helpers to run an agent or a flusher against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from taskyard.settings import WorkerSettings
from taskyard.worker.agent import WorkerAgent

SERVER = "http://127.0.0.1:9"


# --------------------------------------------------------------------------------------------------
# The fake server


class FakeServer:
    """Just enough of the server: registration, long-poll claims, aborts, heartbeats, reports, and the
    tracking endpoint that takes the runs' log lines and samples.

    Mirrors the real semantics that matter to the agent: a poll returns at once when it claims runs,
    when one of the listed runs is no longer held (abort), or when the worker is not active; outcomes a
    poll carries are applied first, as a report; a report
    from an attempt that does not hold its run is rejected (409 when it is the only item); the tracking
    endpoint answers bare JSON and Spring-Boot-shaped errors, and takes lines of any run it knows.
    """

    def __init__(self, *, lease_seconds: float = 15.0) -> None:
        self.lease_seconds = lease_seconds
        self.status = "active"
        self.worker_ids: set[str] = set()
        self.next_run_id = 1
        self.queue: list[dict[str, Any]] = []
        self.held: dict[int, int] = {}  # run_id -> attempt held by the worker
        self.aborted: set[int] = set()
        self.stale: set[int] = set()
        self.outcomes: dict[int, dict[str, Any]] = {}
        self.logs: dict[int, list[dict[str, Any]]] = {}
        self.samples: dict[int, list[dict[str, Any]]] = {}
        self.report_bodies: list[dict[str, Any]] = []
        self.poll_reports: list[list[dict[str, Any]]] = []  # the outcomes each poll carried
        self.tracking_bodies: list[dict[str, Any]] = []
        self.deliveries: list[tuple[str, int]] = []  # ("logs" | "outcome", run_id), in the order accepted
        self.failed_reports = 0
        self.polls: list[tuple[float, dict[str, Any]]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.deletes: list[tuple[float, str]] = []
        self.claims: list[tuple[float, int]] = []
        self.events: list[str] = []  # coarse order of notable requests
        self.down = False  # every request fails with 503 (bodies are still recorded)
        self.reports_down = False  # only reports fail, as if the network dropped them
        self.refuse_polls_with_reports = 0  # this many polls that carry outcomes fail with 503, unapplied
        self.tracking_status: int | None = None  # the tracking endpoint answers this error status
        self.tracking_max_lines = TRACKING_MAX  # more log lines than this in one call: 413
        self.changed = asyncio.Event()
        self.transport = httpx.MockTransport(self.handle)

    # -- test helpers

    def add_run(self, command: str, *, task_type: str = "shell", **extra: Any) -> int:
        run_id = self.next_run_id
        self.next_run_id += 1
        self.queue.append(
            {
                "run_id": run_id,
                "uuid": f"uuid-{run_id}",
                "attempt": 1,
                "task_id": 100 + run_id,
                "task_name": f"task-{run_id}",
                "task_type": task_type,
                "command": command,
                "arguments": [],
                "metadata": {},
                "parameters": {},
                "timeout_seconds": None,
                "priority": "normal",
                "lease_expires_at": None,
                **extra,
            }
        )
        self.wake()
        return run_id

    def abort(self, run_id: int) -> None:
        self.aborted.add(run_id)
        self.held.pop(run_id, None)
        self.wake()

    def forget_workers(self) -> None:
        self.worker_ids.clear()
        self.held.clear()
        self.wake()

    def wake(self) -> None:
        self.changed.set()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport)

    @property
    def report_requests(self) -> int:
        return len(self.report_bodies)

    def messages(self, run_id: int) -> list[str]:
        return [line["message"] for line in self.logs.get(run_id, [])]

    # -- protocol

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        parts = request.url.path.strip("/").split("/")  # api, workers, [id, [action]]
        if parts == ["api", "tracking", "batch"] and request.method == "POST":
            return self.track(body, request.url.path)
        assert parts[:2] == ["api", "workers"], request.url
        if request.method == "POST" and len(parts) == 4:
            if parts[3] == "poll":
                self.polls.append((time.monotonic(), body))
            elif parts[3] == "heartbeat":
                self.heartbeats.append(body)
        if self.down:
            return _error(503, "UNAVAILABLE", "down")
        if request.method == "POST" and len(parts) == 2:
            return self.register(body)
        worker_id = parts[2]
        if worker_id not in self.worker_ids:
            return _error(404, "RESOURCE_NOT_FOUND", f"worker '{worker_id}' does not exist")
        if request.method == "DELETE":
            self.deletes.append((time.monotonic(), worker_id))
            self.events.append("delete")
            self.worker_ids.discard(worker_id)
            self.held.clear()
            return _ok({"message": "worker unregistered", "worker_id": worker_id})
        action = parts[3]
        if action == "poll":
            return await self.poll(body)
        if action == "heartbeat":
            return _ok(
                {
                    "worker_id": worker_id,
                    "status": self.status,
                    "abort_runs": self.not_held(body["current_tasks"]),
                    "lease_seconds": self.lease_seconds,
                }
            )
        if action == "report":
            return self.report(body)
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def register(self, body: dict[str, Any]) -> httpx.Response:
        self.registrations.append(body)
        worker_id = body.get("id") or f"fake-{len(self.registrations)}"
        self.worker_ids.add(worker_id)
        self.events.append("register")
        return _ok({"id": worker_id, "status": "active", "lease_seconds": self.lease_seconds}, 201)

    def not_held(self, run_ids: list[int]) -> list[int]:
        return [r for r in run_ids if r not in self.held]

    async def poll(self, body: dict[str, Any]) -> httpx.Response:
        deadline = time.monotonic() + body["wait"]
        report = None
        if "reports" in body and self.refuse_polls_with_reports > 0:
            self.refuse_polls_with_reports -= 1
            return _error(503, "UNAVAILABLE", "busy")
        if "reports" in body:
            assert all(set(item) <= REPORT_KEYS for item in body["reports"]), body["reports"]
            self.poll_reports.append(body["reports"])
            accepted, rejected = self.apply_reports(body["reports"])
            report = {"accepted": accepted, "rejected": rejected}
        while True:
            if self.down:
                return _error(503, "UNAVAILABLE", "down")
            aborts = self.not_held(body["running"])
            claimed: list[dict[str, Any]] = []
            if self.status == "active":
                while self.queue and len(claimed) < body["capacity"]:
                    run = self.queue.pop(0)
                    self.held[run["run_id"]] = run["attempt"]
                    self.claims.append((time.monotonic(), run["run_id"]))
                    claimed.append(run)
            remaining = deadline - time.monotonic()
            if claimed or aborts or self.status != "active" or remaining <= 0:
                answer = {"runs": claimed, "abort_runs": aborts, "status": self.status,
                          "lease_seconds": self.lease_seconds}
                return _ok({**answer, "report": report} if report is not None else answer)
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def report(self, body: dict[str, Any]) -> httpx.Response:
        if self.reports_down:
            self.failed_reports += 1
            raise httpx.ConnectError("connection refused")
        for item in body["reports"]:
            unknown = set(item) - REPORT_KEYS
            if unknown:
                return _error(422, "VALIDATION_ERROR", f"unknown fields: {sorted(unknown)}")
        self.report_bodies.append(body)
        accepted, rejected = self.apply_reports(body["reports"])
        if len(body["reports"]) == 1 and rejected:
            return _error(409, "RESOURCE_CONFLICT", rejected[0]["message"], {"run_id": rejected[0]["run_id"]})
        return _ok({"accepted": accepted, "rejected": rejected})

    def apply_reports(self, items: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
        accepted: list[int] = []
        rejected: list[dict[str, Any]] = []
        for item in items:
            run_id = item["run_id"]
            aborted = run_id in self.aborted
            if run_id in self.stale or (self.held.get(run_id) != item["attempt"] and not aborted):
                rejected.append({"run_id": run_id, "code": "RESOURCE_CONFLICT", "message": "stale attempt"})
                continue
            if item["outcome"] is not None:
                self.events.append(f"outcome:{run_id}")
                self.deliveries.append(("outcome", run_id))
                if not aborted:
                    self.held.pop(run_id, None)
                self.outcomes[run_id] = item
            accepted.append(run_id)
        return accepted, rejected

    def track(self, body: dict[str, Any], path: str) -> httpx.Response:
        self.tracking_bodies.append(body)
        if self.down:
            return _spring(503, "down", path)
        if self.tracking_status is not None:
            return _spring(self.tracking_status, "refused on purpose", path)
        logs, samples = body.get("logs", []), body.get("samples", [])
        if body.get("events") or not isinstance(logs, list) or not isinstance(samples, list):
            return _spring(400, "bad body", path)
        if len(logs) > TRACKING_MAX or len(samples) > TRACKING_MAX:
            return _spring(400, f"at most {TRACKING_MAX} logs and samples per call", path)
        if len(logs) > self.tracking_max_lines:
            return _spring(413, "request entity too large", path)
        known = {str(run_id) for run_id in range(1, self.next_run_id)}
        for line in logs:
            assert set(line) == {"runId", "attempt", "timestamp", "level", "stream", "message"}, line
            assert isinstance(line["attempt"], int) and line["level"] in {"info", "warn", "error", "debug"}, line
            assert line["stream"] in {"stdout", "stderr", "system"} and line["timestamp"], line
        for sample in samples:
            assert set(sample) == {"runId", "name", "value", "unit", "timestamp", "source"}, sample
            assert isinstance(sample["value"], float) and sample["source"] == "worker", sample
        for item in [*logs, *samples]:
            if item["runId"] not in known:
                return _spring(404, f"no run with runId '{item['runId']}'", path)
        for line in logs:
            self.logs.setdefault(int(line["runId"]), []).append(line)
        self.deliveries.extend(("logs", run_id) for run_id in dict.fromkeys(int(line["runId"]) for line in logs))
        for sample in samples:
            self.samples.setdefault(int(sample["runId"]), []).append(sample)
        return httpx.Response(200, json={"accepted": len(logs) + len(samples)})


TOTALS = {"cpu_seconds", "memory_peak_mb"}
REPORT_KEYS = {"run_id", "attempt", "outcome", "result", "error_message", "exit_code"}
TRACKING_MAX = 10_000


def _spring(status: int, message: str, path: str) -> httpx.Response:
    headers = {"Retry-After": "0.1"} if status in (429, 503) else None
    body = {"timestamp": "2025-01-01T00:00:00Z", "status": status, "error": "Error", "message": message, "path": path}
    return httpx.Response(status, json=body, headers=headers)


def _ok(data: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data, "metadata": {}})


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"success": False, "error": {"code": code, "message": message, "details": details or {}}}
    )


# --------------------------------------------------------------------------------------------------
# Helpers


def settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "server": SERVER,
        "task_types": "shell,python,http",
        "concurrency": 4,
        "heartbeat_interval": 0.5,
        "poll_wait": 5.0,
        "kill_grace_seconds": 1.0,
        "shutdown_grace_seconds": 5.0,
    }
    values.update(overrides)
    return WorkerSettings(**values)


@contextlib.asynccontextmanager
async def running_agent(agent: WorkerAgent) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        if not task.done():
            agent.stop(graceful=False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def finish(task: Awaitable[int], timeout: float = 8.0) -> int:
    return await asyncio.wait_for(task, timeout)


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def delivery_index(fake: FakeServer, run_id: int, kind: str) -> list[int]:
    """Where the run's log lines ("logs") or outcome ("outcome") reached the fake, in request order."""
    return [i for i, delivery in enumerate(fake.deliveries) if delivery == (kind, run_id)]


def reported_items(fake: FakeServer) -> list[dict[str, Any]]:
    """Every outcome item the server was sent, through the report endpoint or riding on a poll."""
    return [*(item for body in fake.report_bodies for item in body["reports"]),
            *(item for items in fake.poll_reports for item in items)]


