"""The worker agent against an in-memory fake of the server's worker protocol (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from taskyard.settings import WorkerSettings
from taskyard.worker import reports
from taskyard.worker.agent import WorkerAgent
from taskyard.worker.reports import ReportBuffer

SERVER = "http://127.0.0.1:9"


# --------------------------------------------------------------------------------------------------
# The fake server


class FakeServer:
    """Just enough of the server: registration, long-poll claims, aborts, heartbeats, reports.

    Mirrors the real semantics that matter to the agent: a poll returns at once when it claims runs,
    when one of the listed runs is no longer held (abort), or when the worker is not active; a report
    from an attempt that does not hold its run is rejected (409 when it is the only item).
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
        self.report_bodies: list[dict[str, Any]] = []
        self.polls: list[tuple[float, dict[str, Any]]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.deletes: list[tuple[float, str]] = []
        self.claims: list[tuple[float, int]] = []
        self.events: list[str] = []  # coarse order of notable requests
        self.down = False  # every request fails with 503 (bodies are still recorded)
        self.reports_down = False  # only reports fail, as if the network dropped them
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
                return _ok(
                    {
                        "runs": claimed,
                        "abort_runs": aborts,
                        "status": self.status,
                        "lease_seconds": self.lease_seconds,
                    }
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def report(self, body: dict[str, Any]) -> httpx.Response:
        if self.reports_down:
            raise httpx.ConnectError("connection refused")
        self.report_bodies.append(body)
        accepted: list[int] = []
        rejected: list[dict[str, Any]] = []
        for item in body["reports"]:
            run_id = item["run_id"]
            aborted = run_id in self.aborted
            if run_id in self.stale or (self.held.get(run_id) != item["attempt"] and not aborted):
                rejected.append({"run_id": run_id, "code": "RESOURCE_CONFLICT", "message": "stale attempt"})
                continue
            self.logs.setdefault(run_id, []).extend(item["logs"])
            if item["outcome"] is not None:
                self.events.append(f"outcome:{run_id}")
                if not aborted:
                    self.held.pop(run_id, None)
                self.outcomes[run_id] = item
            accepted.append(run_id)
        if len(body["reports"]) == 1 and rejected:
            return _error(409, "RESOURCE_CONFLICT", rejected[0]["message"], {"run_id": rejected[0]["run_id"]})
        return _ok({"accepted": accepted, "rejected": rejected})


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


def report_index(fake: FakeServer, run_id: int, *, outcome: bool) -> list[int]:
    return [
        i
        for i, body in enumerate(fake.report_bodies)
        for item in body["reports"]
        if item["run_id"] == run_id and ((item["outcome"] is not None) if outcome else bool(item["logs"]))
    ]


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


# --------------------------------------------------------------------------------------------------
# Tests


async def test_shell_run_completes_with_logs_before_outcome(fake: FakeServer) -> None:
    run_id = fake.add_run(
        'echo "id=$TASKYARD_RUN_ID uuid=$TASKYARD_RUN_UUID attempt=$TASKYARD_ATTEMPT '
        'fn=$TASKYARD_FUNCTION_NAME api=$TASKYARD_API_URL key=$TASKYARD_API_KEY"; '
        'echo "params=$TASKYARD_PARAMS"; echo oops >&2',
        parameters={"n": 3},
    )
    async with fake.client() as client:
        agent = WorkerAgent(settings(api_key="k-123", name="w1"), client=client, max_runs=1)
        assert await finish(agent.run()) == 0

    assert fake.outcomes[run_id]["outcome"] == "completed"
    assert fake.outcomes[run_id]["exit_code"] == 0
    messages = fake.messages(run_id)
    assert f"id={run_id} uuid=uuid-{run_id} attempt=1 fn=task-{run_id} api={SERVER}/api key=k-123" in messages
    assert 'params={"n": 3}' in messages
    assert "oops" in messages
    assert max(report_index(fake, run_id, outcome=False)) <= min(report_index(fake, run_id, outcome=True))

    registration = fake.registrations[0]
    assert registration["id"] == "w1"
    assert registration["port"] == 0
    assert registration["task_types"] == ["shell", "python", "http"]
    assert registration["max_concurrent_tasks"] == 4
    assert registration["hostname"] and registration["ip_address"]
    assert agent.worker_id == "w1"
    assert fake.events[-1] == "delete"


async def test_server_chooses_the_id_without_a_name(fake: FakeServer) -> None:
    fake.add_run("true")
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert "id" not in fake.registrations[0]
    assert agent.worker_id == "fake-1"


async def test_concurrency_cap_is_respected(fake: FakeServer) -> None:
    runs = [fake.add_run("echo start; sleep 0.5; echo end") for _ in range(5)]
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=2), client=client, max_runs=5)
        started = time.monotonic()
        assert await finish(agent.run()) == 0
        elapsed = time.monotonic() - started

    assert all(fake.outcomes[r]["outcome"] == "completed" for r in runs)
    intervals = []
    for run_id in runs:
        stamps = {line["message"]: line["timestamp"] for line in fake.logs[run_id]}
        intervals.append((stamps["start"], stamps["end"]))
    most = max(sum(1 for s, e in intervals if s <= point < e) for point, _ in intervals)
    assert most == 2
    assert all(body["capacity"] <= 2 for _, body in fake.polls)
    # Three rounds of 0.5 s: proof that two really ran side by side, and not more.
    assert 1.4 < elapsed < 4.0


async def test_reports_of_many_runs_are_batched(fake: FakeServer) -> None:
    runs = [fake.add_run(f"echo run-{i}") for i in range(50)]
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=10), client=client, max_runs=50)
        assert await finish(agent.run()) == 0
    assert all(fake.outcomes[r]["outcome"] == "completed" for r in runs)
    assert all(fake.messages(r) == [f"run-{i}"] for i, r in enumerate(runs))
    assert fake.report_requests <= 20, fake.report_requests
    assert max(len(body["reports"]) for body in fake.report_bodies) > 1


async def test_abort_from_the_poll_kills_the_run(fake: FakeServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run_id = fake.add_run(f"echo $$ > {pidfile}; exec sleep 30")
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client)
        async with running_agent(agent) as task:
            await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the run to start")
            pid = read_pid(pidfile)
            aborted_at = time.monotonic()
            fake.abort(run_id)
            await until(lambda: run_id in fake.outcomes, timeout=2.0, what="the aborted outcome")
            assert time.monotonic() - aborted_at < 2.0
            assert fake.outcomes[run_id]["outcome"] == "aborted"
            assert not pid_alive(pid)
            agent.stop()
            assert await finish(task) == 0


async def test_rejected_report_kills_the_run_and_drops_its_data(fake: FakeServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run_id = fake.add_run(f"echo $$ > {pidfile}; echo first; exec sleep 30")
    fake.stale.add(run_id)  # e.g. the run was reassigned: every write of this attempt is refused
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client)
        async with running_agent(agent) as task:
            await until(lambda: fake.report_requests >= 1, what="the first report")
            assert pidfile.exists()
            pid = read_pid(pidfile)
            await until(lambda: not pid_alive(pid), timeout=3.0, what="the run to be killed")
            await until(lambda: not agent._runs.executions, what="the run to end")
            await asyncio.sleep(0.3)
            agent.stop()
            assert await finish(task) == 0
    items = [item for body in fake.report_bodies for item in body["reports"] if item["run_id"] == run_id]
    # Only the one refused request: after the 409 nothing of this attempt is sent again.
    assert len(items) == 1
    assert items[0]["outcome"] is None
    assert run_id not in fake.outcomes


async def test_rejected_item_in_a_batch_only_affects_that_run(fake: FakeServer) -> None:
    good = [fake.add_run("echo ok") for _ in range(3)]
    bad = fake.add_run("echo nope")
    fake.stale.add(bad)
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=4), client=client, max_runs=4)
        assert await finish(agent.run()) == 0
    assert all(fake.outcomes[r]["outcome"] == "completed" for r in good)
    assert bad not in fake.outcomes


async def test_lost_lease_kills_runs_and_stops_claiming(tmp_path: Path) -> None:
    fake = FakeServer(lease_seconds=1.0)
    pidfile = tmp_path / "pid"
    first = fake.add_run(f"echo $$ > {pidfile}; exec sleep 30")
    async with fake.client() as client:
        agent = WorkerAgent(settings(heartbeat_interval=0.2, poll_wait=0.5), client=client, max_runs=2)
        async with running_agent(agent) as task:
            await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the run to start")
            pid = read_pid(pidfile)
            fake.down = True
            went_down = time.monotonic()
            await until(lambda: not pid_alive(pid), timeout=4.0, what="the run to be killed")
            killed_after = time.monotonic() - went_down
            assert 0.9 < killed_after < 3.5
            await until(lambda: not agent._runs.executions, what="the run to end")
            # Everything the worker asks while it has no lease claims nothing.
            lost_at = time.monotonic()
            second = fake.add_run("echo second")
            await until(lambda: any(at > lost_at for at, _ in fake.polls), what="a poll without the lease")
            assert all(body["capacity"] == 0 for at, body in fake.polls if at > lost_at)
            fake.down = False
            assert await finish(task) == 0
    assert first not in fake.outcomes  # no report for an attempt that lost its lease
    assert fake.outcomes[second]["outcome"] == "completed"


async def test_graceful_stop_waits_for_the_running_run(fake: FakeServer) -> None:
    run_id = fake.add_run("sleep 1; echo done")
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client)
        async with running_agent(agent) as task:
            await until(lambda: bool(fake.claims), what="the claim")
            stop_at = time.monotonic()
            agent.stop()
            # The poll that was in flight may still reach the fake with its old capacity; from the
            # first capacity-0 poll on, the worker claims nothing.
            await until(
                lambda: any(at > stop_at and body["capacity"] == 0 for at, body in fake.polls),
                what="a poll with capacity 0",
            )
            zero_at = min(at for at, body in fake.polls if at > stop_at and body["capacity"] == 0)
            fake.add_run("echo never")
            assert await finish(task) == 0
    assert fake.outcomes[run_id]["outcome"] == "completed"
    assert fake.messages(run_id) == ["done"]
    assert len(fake.claims) == 1
    assert all(body["capacity"] == 0 for at, body in fake.polls if at >= zero_at)
    assert fake.events[-2:] == [f"outcome:{run_id}", "delete"]


async def test_graceful_stop_aborts_what_outlives_the_grace(fake: FakeServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run_id = fake.add_run(f"echo $$ > {pidfile}; exec sleep 30")
    async with fake.client() as client:
        agent = WorkerAgent(settings(shutdown_grace_seconds=0.5), client=client)
        async with running_agent(agent) as task:
            await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the run to start")
            pid = read_pid(pidfile)
            started = time.monotonic()
            agent.stop()
            assert await finish(task) == 0
            assert time.monotonic() - started < 3.0
    assert not pid_alive(pid)
    # No outcome: unregistering hands the run back to the server, which retries it.
    assert run_id not in fake.outcomes
    assert any("shutting down" in m for m in fake.messages(run_id))
    assert fake.events[-1] == "delete"


async def test_second_stop_is_immediate(fake: FakeServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    fake.add_run(f"echo $$ > {pidfile}; exec sleep 30")
    async with fake.client() as client:
        agent = WorkerAgent(settings(shutdown_grace_seconds=60), client=client)
        async with running_agent(agent) as task:
            await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the run to start")
            pid = read_pid(pidfile)
            agent.stop()
            await asyncio.sleep(0.3)
            assert pid_alive(pid)
            started = time.monotonic()
            agent.stop()
            assert await finish(task) == 0
            assert time.monotonic() - started < 3.0
    assert not pid_alive(pid)
    assert fake.events[-1] == "delete"


async def test_draining_status_stops_claiming(fake: FakeServer) -> None:
    running = fake.add_run("sleep 0.6; echo finished")
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client)
        async with running_agent(agent) as task:
            await until(lambda: bool(fake.claims), what="the claim")
            fake.status = "draining"
            fake.wake()
            drained_at = time.monotonic()
            waiting = fake.add_run("echo not-now")
            await until(lambda: running in fake.outcomes, what="the running run to finish")
            await asyncio.sleep(1.0)
            assert fake.outcomes[running]["outcome"] == "completed"
            assert waiting not in fake.held and waiting not in fake.outcomes
            later = [body for at, body in fake.polls if at > drained_at + 0.1]
            assert later and all(body["capacity"] == 0 for body in later)
            # The server answers a draining worker at once; the worker must not spin.
            assert len(later) < 10
            # Back to active: claiming resumes.
            fake.status = "active"
            fake.wake()
            await until(lambda: waiting in fake.outcomes, what="the waiting run after reactivation")
            agent.stop()
            assert await finish(task) == 0


async def test_max_runs_exits_zero_without_overclaiming(fake: FakeServer) -> None:
    runs = [fake.add_run(f"echo {i}") for i in range(5)]
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=4), client=client, max_runs=3)
        assert await finish(agent.run()) == 0
    assert len(fake.claims) == 3
    assert sorted(fake.outcomes) == runs[:3]
    assert len(fake.queue) == 2
    assert fake.events[-1] == "delete"


async def test_reports_survive_an_outage(fake: FakeServer) -> None:
    run_id = fake.add_run("echo hello; sleep 0.2")
    fake.reports_down = True
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        async with running_agent(agent) as task:
            await until(lambda: not agent._runs.executions and agent._runs.finished == 1, what="the run to end")
            await asyncio.sleep(0.5)  # a few failed attempts
            assert run_id not in fake.outcomes
            fake.reports_down = False
            assert await finish(task) == 0
    assert fake.outcomes[run_id]["outcome"] == "completed"
    assert fake.messages(run_id) == ["hello"]


async def test_reregisters_when_the_server_forgets_the_worker(fake: FakeServer) -> None:
    async with fake.client() as client:
        agent = WorkerAgent(settings(name="w-stable"), client=client)
        async with running_agent(agent) as task:
            await until(lambda: len(fake.registrations) == 1, what="registration")
            fake.forget_workers()
            await until(lambda: len(fake.registrations) == 2, what="registering again")
            run_id = fake.add_run("echo again")
            await until(lambda: run_id in fake.outcomes, what="a run after re-registering")
            agent.stop()
            assert await finish(task) == 0
    assert [r["id"] for r in fake.registrations] == ["w-stable", "w-stable"]


async def test_unsupported_task_type_fails_the_run(fake: FakeServer) -> None:
    run_id = fake.add_run("whatever", task_type="carrier-pigeon")
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert fake.outcomes[run_id]["outcome"] == "failed"
    assert "unsupported task type" in fake.outcomes[run_id]["error_message"]


async def test_heartbeats_report_held_runs_and_load(fake: FakeServer) -> None:
    run_id = fake.add_run("sleep 0.6")
    async with fake.client() as client:
        agent = WorkerAgent(settings(heartbeat_interval=0.1), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    beats = [b for b in fake.heartbeats if b["current_tasks"]]
    assert beats and beats[0]["current_tasks"] == [run_id] and beats[0]["current_task_count"] == 1
    assert isinstance(beats[0]["memory_usage"], int) and beats[0]["cpu_usage"] >= 0


async def test_process_tree_samples_are_attached_to_reports(fake: FakeServer) -> None:
    # The leader (guard shell), the command's shell, and a background child holding 8 MB.
    run_id = fake.add_run("python3 -c 'import time; b = bytearray(8 << 20); time.sleep(0.8)' & wait")
    async with fake.client() as client:
        agent = WorkerAgent(settings(sample_interval=0.1), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert fake.outcomes[run_id]["outcome"] == "completed"
    items = [item for body in fake.report_bodies for item in body["reports"] if item["run_id"] == run_id]
    samples = [sample for item in items for sample in item.get("samples", [])]
    names = {sample["name"] for sample in samples}
    assert {"cpu", "memory_mb", "connections"} <= names, names
    memory = [sample["value"] for sample in samples if sample["name"] == "memory_mb"]
    assert len(memory) >= 3 and max(memory) > 8, memory
    units = {sample["name"]: sample["unit"] for sample in samples}
    assert units["cpu"] == "percent" and units["memory_mb"] == "MB" and units["connections"] == "count"
    assert all(isinstance(sample["value"], float) and sample["timestamp"] for sample in samples)
    assert all(len(item.get("samples", [])) <= reports.MAX_SAMPLES for item in items)


async def test_sampling_can_be_turned_off(fake: FakeServer) -> None:
    fake.add_run("sleep 0.3")
    async with fake.client() as client:
        agent = WorkerAgent(settings(sample_interval=0), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert not any("samples" in item for body in fake.report_bodies for item in body["reports"])


async def test_a_dying_side_task_stops_the_worker_with_an_error(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: WorkerAgent) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(WorkerAgent, "_heartbeat_loop", broken)
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client)
        with caplog.at_level(logging.ERROR, logger="taskyard.worker"):
            assert await finish(agent.run()) == 1
    assert "heartbeat loop failed" in caplog.text
    assert fake.events[-1] == "delete"


async def test_registration_refused_exits_with_an_error() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return _error(422, "VALIDATION_ERROR", "unknown task types: carrier-pigeon")

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        agent = WorkerAgent(settings(task_types="carrier-pigeon"), client=client)
        assert await finish(agent.run()) == 1


async def test_stop_before_the_server_is_reachable_exits_cleanly() -> None:
    async def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(unreachable)) as client:
        agent = WorkerAgent(settings(), client=client)
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.5)
        agent.stop()
        assert await finish(task) == 0


# --------------------------------------------------------------------------------------------------
# The report buffer on its own


def _lines(n: int, prefix: str = "l") -> list[dict[str, Any]]:
    return [{"timestamp": "t", "level": "info", "stream": "stdout", "message": f"{prefix}{i}"} for i in range(n)]


def test_buffer_drops_oldest_lines_but_keeps_outcomes() -> None:
    buffer = ReportBuffer(max_lines=10)
    buffer.add_logs(1, 1, _lines(6, "a"))
    buffer.add_outcome(1, 1, {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0})
    buffer.add_logs(2, 1, _lines(8, "b"))
    assert buffer.lines == 10
    assert buffer.take_dropped() == 4
    batch = buffer.take(100, 10**6, 100)
    assert [p.run_id for p in batch] == [1, 2]
    assert [line["message"] for line in batch[0].logs] == ["a4", "a5"]
    assert batch[0].final is not None and batch[0].final["outcome"] == "completed"
    assert len(batch[1].logs) == 8


def test_buffer_sends_an_outcome_only_with_the_last_of_its_logs() -> None:
    buffer = ReportBuffer()
    buffer.add_logs(1, 1, _lines(5))
    buffer.add_outcome(1, 1, {"outcome": "failed", "result": None, "error_message": "x", "exit_code": 1})
    first = buffer.take(3, 10**6, 100)
    assert len(first[0].logs) == 3 and first[0].final is None
    second = buffer.take(3, 10**6, 100)
    assert len(second[0].logs) == 2 and second[0].final is not None
    assert buffer.empty


def test_buffer_restores_a_failed_batch_in_front() -> None:
    buffer = ReportBuffer()
    buffer.add_logs(1, 1, _lines(2, "old"))
    batch = buffer.take(100, 10**6, 100)
    buffer.add_logs(1, 1, _lines(1, "new"))
    buffer.restore(batch)
    again = buffer.take(100, 10**6, 100)
    assert [line["message"] for line in again[0].logs] == ["old0", "old1", "new0"]
    assert buffer.lines == 0


def test_buffer_due_times() -> None:
    buffer = ReportBuffer()
    assert buffer.due_at(time.monotonic()) is None
    buffer.add_logs(1, 1, _lines(1))
    now = time.monotonic()
    assert now < buffer.due_at(now) <= now + reports.FLUSH_DELAY_SECONDS  # type: ignore[operator]
    buffer.add_outcome(1, 1, {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0})
    assert buffer.due_at(now) <= time.monotonic() + reports.OUTCOME_DELAY_SECONDS  # type: ignore[operator]
    buffer.add_logs(2, 1, _lines(reports.FLUSH_LINES))
    assert buffer.due_at(now) == now


def test_buffer_sends_samples_with_the_next_item_and_restores_them() -> None:
    buffer = ReportBuffer()
    buffer.add_samples(1, 1, [{"name": "cpu", "value": 1.0, "unit": "percent", "timestamp": "t"}])
    assert not buffer.empty
    batch = buffer.take(100, 10**6, 100)
    assert batch[0].to_json()["samples"][0]["name"] == "cpu" and batch[0].to_json()["outcome"] is None
    assert buffer.empty
    buffer.add_samples(1, 1, [{"name": "cpu", "value": 2.0, "unit": "percent", "timestamp": "t"}])
    buffer.restore(batch)
    buffer.add_outcome(1, 1, {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0})
    [again] = buffer.take(100, 10**6, 100)
    assert [sample["value"] for sample in again.samples] == [1.0, 2.0] and again.final is not None
    assert buffer.empty
    buffer.add_samples(2, 1, [{"name": "cpu", "value": float(i), "unit": "percent", "timestamp": "t"}
                              for i in range(reports.MAX_SAMPLES + 5)])
    [capped] = buffer.take(100, 10**6, 100)
    assert len(capped.samples) == reports.MAX_SAMPLES and capped.samples[0]["value"] == 5.0
