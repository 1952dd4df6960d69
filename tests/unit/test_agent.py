"""The worker agent against an in-memory fake of the server's worker protocol (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
from agent_kit import (
    SERVER,
    TOTALS,
    FakeServer,
    _error,
    delivery_index,
    finish,
    pid_alive,
    read_pid,
    reported_items,
    running_agent,
    settings,
    until,
)

from taskyard.worker import reports
from taskyard.worker.agent import WorkerAgent

# --------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


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
    assert max(delivery_index(fake, run_id, "logs")) < min(delivery_index(fake, run_id, "outcome"))
    assert all(item["outcome"] is not None for item in reported_items(fake))

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
    assert len(fake.tracking_bodies) <= 20, len(fake.tracking_bodies)
    assert max(len(body["reports"]) for body in fake.report_bodies) > 1
    assert max(len({line["runId"] for line in body["logs"]}) for body in fake.tracking_bodies) > 1


async def test_outcomes_ride_on_claiming_polls_and_arrive_once(fake: FakeServer) -> None:
    runs = [fake.add_run("true") for _ in range(40)]
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=4), client=client, max_runs=40)
        assert await finish(agent.run(), 20) == 0
    assert all(fake.outcomes[r]["outcome"] == "completed" for r in runs)
    riding = [item["run_id"] for items in fake.poll_reports for item in items]
    assert riding, "a busy worker sends its outcomes with its polls"
    assert all(body["capacity"] > 0 for _, body in fake.polls if "reports" in body)
    delivered = [run_id for kind, run_id in fake.deliveries if kind == "outcome"]
    assert sorted(delivered) == runs, "every outcome arrives exactly once"
    # Fewer requests than runs: polls claim and report in batches.
    assert len(fake.polls) + fake.report_requests < len(runs)


async def test_outcomes_of_a_failed_poll_are_sent_again(fake: FakeServer) -> None:
    fake.refuse_polls_with_reports = 3
    runs = [fake.add_run("true") for _ in range(12)]
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=2), client=client, max_runs=12)
        assert await finish(agent.run(), 20) == 0
    assert fake.refuse_polls_with_reports == 0
    delivered = [run_id for kind, run_id in fake.deliveries if kind == "outcome"]
    assert sorted(delivered) == runs


async def test_an_outcome_refused_with_the_poll_answer_is_dropped(fake: FakeServer) -> None:
    first = fake.add_run("true")
    fake.stale.add(first)
    later = [fake.add_run("sleep 0.2") for _ in range(3)]
    async with fake.client() as client:
        agent = WorkerAgent(settings(concurrency=1), client=client, max_runs=4)
        assert await finish(agent.run(), 20) == 0
    assert first not in fake.outcomes and all(fake.outcomes[r]["outcome"] == "completed" for r in later)
    assert [item["run_id"] for item in reported_items(fake)].count(first) == 1, "a refused outcome is not resent"


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


async def test_rejected_outcome_is_dropped_and_not_sent_again(fake: FakeServer) -> None:
    run_id = fake.add_run("echo first; sleep 0.2")
    fake.stale.add(run_id)  # e.g. the run was reassigned: the outcome of this attempt is refused
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client)
        async with running_agent(agent) as task:
            await until(lambda: fake.report_requests >= 1, what="the outcome's report")
            await until(lambda: not agent._runs.executions, what="the run to end")
            await asyncio.sleep(0.3)
            agent.stop()
            assert await finish(task) == 0
    items = [item for item in reported_items(fake) if item["run_id"] == run_id]
    # Only the one refused request: after the 409 nothing of this attempt is sent again.
    assert len(items) == 1
    assert items[0]["outcome"] == "completed"
    assert run_id not in fake.outcomes
    assert fake.messages(run_id) == ["first"]  # the lines went to the tracking endpoint before


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


async def test_logs_reach_the_tracking_endpoint_before_the_outcome(fake: FakeServer) -> None:
    # More lines than one request carries: the outcome waits for the last of them.
    run_id = fake.add_run("seq 1 12000")
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert fake.messages(run_id) == [str(i) for i in range(1, 12001)]
    assert len(delivery_index(fake, run_id, "logs")) >= 3
    assert max(delivery_index(fake, run_id, "logs")) < min(delivery_index(fake, run_id, "outcome"))
    assert all(len(body["logs"]) <= reports.REQUEST_MAX_LINES for body in fake.tracking_bodies)


async def test_a_tracking_outage_delays_but_loses_nothing(fake: FakeServer) -> None:
    run_id = fake.add_run("echo hello; echo world")
    fake.tracking_status = 503
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        async with running_agent(agent) as task:
            await until(lambda: not agent._runs.executions and agent._runs.finished == 1, what="the run to end")
            tried = len(fake.tracking_bodies)
            await asyncio.sleep(0.5)
            # Retried, at the pace the server's Retry-After (0.1 s) asks for.
            assert 2 <= len(fake.tracking_bodies) - tried <= 8, len(fake.tracking_bodies) - tried
            # The outcome waits for the run's lines.
            assert run_id not in fake.outcomes and not fake.report_bodies
            fake.tracking_status = None
            assert await finish(task) == 0
    assert fake.messages(run_id) == ["hello", "world"]
    assert fake.outcomes[run_id]["outcome"] == "completed"


async def test_lines_the_tracking_endpoint_refuses_are_dropped_but_the_outcome_goes(
    fake: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = fake.add_run("echo hello; exit 3")
    fake.tracking_status = 400
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        with caplog.at_level(logging.ERROR, logger="taskyard.worker"):
            assert await finish(agent.run()) == 0
    assert fake.outcomes[run_id]["outcome"] == "failed" and fake.outcomes[run_id]["exit_code"] == 3
    assert run_id not in fake.logs
    # Refused for good: not sent again.
    assert sum(1 for body in fake.tracking_bodies for line in body["logs"] if line["message"] == "hello") == 1
    assert "refused 1 log line(s)" in caplog.text


async def test_no_line_is_sent_twice_when_the_outcome_has_to_be_retried(fake: FakeServer) -> None:
    run_id = fake.add_run("for i in $(seq 1 20); do echo line-$i; done")
    fake.reports_down = True
    async with fake.client() as client:
        agent = WorkerAgent(settings(), client=client, max_runs=1)
        async with running_agent(agent) as task:
            await until(lambda: fake.failed_reports >= 3, what="a few failed reports")
            assert fake.messages(run_id) == [f"line-{i}" for i in range(1, 21)]
            fake.reports_down = False
            assert await finish(task) == 0
    assert fake.outcomes[run_id]["outcome"] == "completed"
    assert fake.messages(run_id) == [f"line-{i}" for i in range(1, 21)]
    sent = [line for body in fake.tracking_bodies for line in body["logs"] if line["runId"] == str(run_id)]
    assert len(sent) == 20


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


async def test_process_tree_samples_go_to_the_tracking_endpoint(fake: FakeServer) -> None:
    # The leader (guard shell), the command's shell, and a background child holding 8 MB.
    run_id = fake.add_run("python3 -c 'import time; b = bytearray(8 << 20); time.sleep(0.8)' & wait")
    async with fake.client() as client:
        agent = WorkerAgent(settings(sample_interval=0.1), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert fake.outcomes[run_id]["outcome"] == "completed"
    samples = fake.samples[run_id]
    names = {sample["name"] for sample in samples}
    assert {"cpu", "memory_mb", "connections", "cpu_seconds", "memory_peak_mb"} <= names, names
    memory = [sample["value"] for sample in samples if sample["name"] == "memory_mb"]
    assert len(memory) >= 3 and max(memory) > 8, memory
    units = {sample["name"]: sample["unit"] for sample in samples}
    assert units["cpu"] == "percent" and units["memory_mb"] == "MB" and units["connections"] == "count"
    assert units["cpu_seconds"] == "seconds" and units["memory_peak_mb"] == "MB"
    assert all(sample["runId"] == str(run_id) and sample["source"] == "worker" for sample in samples)
    assert all(isinstance(sample["value"], float) and sample["timestamp"] for sample in samples)
    # The totals: once, after the last measurement, with the peak of what the measurements saw.
    [peak] = [sample["value"] for sample in samples if sample["name"] == "memory_peak_mb"]
    assert peak == max(memory)
    assert [sample["name"] for sample in samples][-2:] == ["cpu_seconds", "memory_peak_mb"]


async def test_a_run_that_outlives_the_sample_interval_reports_its_totals(fake: FakeServer) -> None:
    # A child holds 16 MB and burns 0.3 s of CPU, then exits while the run goes on: the totals keep
    # both, although the last measurement no longer sees the child.
    run_id = fake.add_run(
        "python3 -c 'import time\nb = bytearray(16 << 20)\nend = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\ntime.sleep(0.4)'; sleep 0.6"
    )
    quick = fake.add_run("true")
    async with fake.client() as client:
        agent = WorkerAgent(settings(sample_interval=0.5), client=client, max_runs=2)
        assert await finish(agent.run()) == 0
    samples = fake.samples[run_id]
    totals = {sample["name"]: sample["value"] for sample in samples if sample["name"] in TOTALS}
    assert set(totals) == TOTALS, samples
    assert 0.25 <= totals["cpu_seconds"] < 5, totals
    assert totals["memory_peak_mb"] > 16, totals
    # After the child is gone the tree holds much less: the peak is not the last measurement.
    assert [sample["value"] for sample in samples if sample["name"] == "memory_mb"][-1] < 16
    # The totals travel with the outcome, after every other sample of the run.
    assert [sample["name"] for sample in samples][-2:] == ["cpu_seconds", "memory_peak_mb"]
    # A run over before its first measurement has nothing to report, rather than zeros.
    assert quick not in fake.samples
    assert fake.outcomes[quick]["outcome"] == "completed"


async def test_sampling_can_be_turned_off(fake: FakeServer) -> None:
    fake.add_run("sleep 0.3")
    async with fake.client() as client:
        agent = WorkerAgent(settings(sample_interval=0), client=client, max_runs=1)
        assert await finish(agent.run()) == 0
    assert not fake.samples
    assert not any(body["samples"] for body in fake.tracking_bodies)


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


