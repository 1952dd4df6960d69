"""/api/workers over HTTP on both databases: the registry and the worker protocol (register, poll,
report, heartbeat, update, unregister), claims by priority, capacity, retries and stale attempts."""

from __future__ import annotations

import httpx
from helpers import (
    claim_one,
    clocked,
    create_task,
    data,
    error,
    finish,
    get_run,
    list_items,
    parse_ts,
    poll,
    register,
    report,
    run_task,
    trigger,
)


async def test_register_echoes_and_generates_an_id(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        body = {"hostname": "server-01", "ip_address": "192.168.1.100", "port": 8080,
                "task_types": ["python", "shell"], "max_concurrent_tasks": 7, "metadata": {"rack": "b2"}}
        worker = data(await client.post("/api/workers", json=body), 201)
        for key, value in body.items():
            assert worker[key] == value, key
        assert worker["id"].startswith("server-01")
        assert (worker["status"], worker["current_task_count"]) == ("active", 0)
        assert worker["last_heartbeat"] == worker["registered_at"] == "2026-01-05T12:00:00Z"
        assert worker["lease_seconds"] > 0
        default = await register(client, "server-02")
        assert default["max_concurrent_tasks"] == 5 and default["metadata"] == {}
        assert default["id"] != worker["id"]
        detail = data(await client.get(f"/api/workers/{worker['id']}"))
        assert detail["hostname"] == "server-01" and detail["current_tasks"] == []


async def test_register_with_id_is_stable_and_requeues_held_runs(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        first = await register(client, "box", id="worker-001")
        assert first["id"] == "worker-001"
        task = await create_task(client, "long")
        run_id = (await trigger(client, task["id"]))["run_id"]
        claimed = await claim_one(client, "worker-001")
        assert claimed["attempt"] == 1
        clock.advance(10)
        again = await register(client, "box", id="worker-001", max_concurrent_tasks=2)
        assert again["id"] == "worker-001" and again["max_concurrent_tasks"] == 2
        assert again["registered_at"] == "2026-01-05T12:00:10Z"
        workers = await list_items(client, "/api/workers")
        assert workers["total"] == 1
        run = await get_run(client, run_id)
        assert (run["state"], run["worker_id"], run["attempt"], run["retry_count"]) == ("queued", None, 1, 1)
        assert run["available_at"] == "2026-01-05T12:00:10Z"  # claimable at once
        assert "re-registered" in run["history"][-1]["reason"]
        reclaimed = await claim_one(client, "worker-001")
        assert (reclaimed["run_id"], reclaimed["attempt"]) == (run_id, 2)
        # the first life's attempt is stale now
        error(await report(client, "worker-001", run_id, 1), 409, "RESOURCE_CONFLICT")
        done = await finish(client, "worker-001", reclaimed)
        assert done["status"] == "completed"
        assert [(h["status"], h["attempt"]) for h in done["history"]] == [
            ("queued", 0), ("running", 1), ("queued", 1), ("running", 2), ("completed", 2)]


async def test_poll_claims_by_priority_then_age(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "prio")
        made = {}
        for label, priority in (("low", "low"), ("normal-1", "normal"), ("critical", "critical"),
                                ("high", "high"), ("normal-2", "normal")):
            made[label] = (await trigger(client, task["id"], priority=priority))["run_id"]
            clock.advance(1)
        worker = (await register(client, max_concurrent_tasks=10))["id"]
        answer = await poll(client, worker, 10)
        assert answer["status"] == "active" and answer["abort_runs"] == []
        assert [r["run_id"] for r in answer["runs"]] == [made[k] for k in (
            "critical", "high", "normal-1", "normal-2", "low")]
        one = answer["runs"][0]
        assert (one["attempt"], one["task_id"], one["task_name"], one["task_type"], one["priority"]) == (
            1, task["id"], "prio", "shell", "critical")
        assert one["command"] == "echo prio" and one["timeout_seconds"] == 3600
        assert one["lease_expires_at"]


async def test_poll_one_at_a_time_follows_priority(app_client: httpx.AsyncClient) -> None:
    low = await create_task(app_client, "low", priority="low")
    high = await create_task(app_client, "high", priority="high")
    worker = (await register(app_client))["id"]
    low_run = (await trigger(app_client, low["id"]))["run_id"]
    high_run = (await trigger(app_client, high["id"]))["run_id"]
    assert (await claim_one(app_client, worker))["run_id"] == high_run
    assert (await claim_one(app_client, worker, [high_run]))["run_id"] == low_run


async def test_poll_respects_concurrency_task_types_and_capacity(app_client: httpx.AsyncClient) -> None:
    shell = await create_task(app_client, "sh")
    python = await create_task(app_client, "py", task_type="python", command="x.py")
    run_ids = [(await trigger(app_client, shell["id"]))["run_id"] for _ in range(3)]
    py_run = (await trigger(app_client, python["id"]))["run_id"]
    only_python = (await register(app_client, "py-box", task_types=["python"]))["id"]
    narrow = (await register(app_client, "sh-box", task_types=["shell"], max_concurrent_tasks=2))["id"]

    assert (await poll(app_client, narrow, 0))["runs"] == []  # capacity 0 claims nothing
    first = await poll(app_client, narrow, 5)
    assert [r["run_id"] for r in first["runs"]] == run_ids[:2]  # max_concurrent_tasks caps the claim
    assert (await poll(app_client, narrow, 5, run_ids[:2]))["runs"] == []
    assert [r["run_id"] for r in (await poll(app_client, only_python, 5))["runs"]] == [py_run]
    assert (await poll(app_client, only_python, 5, [py_run]))["runs"] == []  # never a shell run
    await finish(app_client, narrow, first["runs"][0])
    assert [r["run_id"] for r in (await poll(app_client, narrow, 5, run_ids[1:2]))["runs"]] == [run_ids[2]]
    error(await app_client.post("/api/workers/ghost/poll", json={"capacity": 1, "wait": 0}), 404,
          "RESOURCE_NOT_FOUND")


async def test_report_completes_and_fails(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "work", retry_count=0)
    worker = (await register(app_client))["id"]
    ok = await run_task(app_client, task["id"], worker, result="fine", exit_code=0)
    assert (ok["status"], ok["result"], ok["error_message"]) == ("completed", "fine", None)
    bad = await run_task(app_client, task["id"], worker, "failed", error_message="exit 1", exit_code=1)
    assert (bad["status"], bad["error_message"], bad["exit_code"], bad["retry_count"]) == (
        "failed", "exit 1", 1, 0)
    # a worker may report its own abort (killed on timeout of its own accord, say)
    killed = await run_task(app_client, task["id"], worker, "aborted", error_message="SIGTERM")
    assert (killed["status"], killed["error_message"]) == ("aborted", "SIGTERM")
    # the same outcome again (its first answer was lost) is accepted and changes nothing; another outcome
    # about a finished run is stale; batches accept the good and refuse the rest
    assert data(await report(app_client, worker, ok["id"], 1, result="other")) == {"accepted": [ok["id"]],
                                                                                  "rejected": []}
    assert (await get_run(app_client, ok["id"]))["result"] == "fine"
    error(await report(app_client, worker, ok["id"], 1, "failed"), 409, "RESOURCE_CONFLICT")
    run_id = (await trigger(app_client, task["id"]))["run_id"]
    claimed = await claim_one(app_client, worker)
    batch = data(await app_client.post(f"/api/workers/{worker}/report", json={"reports": [
        {"run_id": run_id, "attempt": claimed["attempt"], "outcome": "completed"},
        {"run_id": ok["id"], "attempt": 1, "outcome": "aborted"},
        {"run_id": 999999, "attempt": 1, "outcome": "completed"}]}))
    assert batch["accepted"] == [run_id]
    assert {r["run_id"]: r["code"] for r in batch["rejected"]} == {ok["id"]: "RESOURCE_CONFLICT",
                                                                   999999: "RESOURCE_NOT_FOUND"}
    # another worker cannot report for a run it does not hold
    other = (await register(app_client, "other"))["id"]
    run_id = (await trigger(app_client, task["id"]))["run_id"]
    claimed = await claim_one(app_client, worker)
    error(await report(app_client, other, run_id, claimed["attempt"]), 409, "RESOURCE_CONFLICT")
    assert (await get_run(app_client, run_id))["status"] == "running"
    error(await report(app_client, "ghost", run_id, 1), 404, "RESOURCE_NOT_FOUND")


async def test_retries_back_off_and_keep_history(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "retry", retry_count=2)
        worker = (await register(client))["id"]
        run_id = (await trigger(client, task["id"]))["run_id"]
        first = await claim_one(client, worker)
        clock.advance(1)
        await finish(client, worker, first, "failed", error_message="try 1", exit_code=1)
        run = await get_run(client, run_id)
        assert (run["status"], run["state"], run["retry_count"], run["attempt"]) == ("pending", "queued", 1, 1)
        assert (run["worker_id"], run["error_message"], run["completed_at"]) == (None, "try 1", None)
        assert parse_ts(run["available_at"]) > clock.now  # backoff: not claimable yet
        assert (await poll(client, worker, 1))["runs"] == []
        listed = (await list_items(client, "/api/runs", task_id=task["id"]))["items"][0]
        assert listed["retry_count"] == 1

        clock.advance(60)
        second = await claim_one(client, worker)
        assert (second["run_id"], second["attempt"]) == (run_id, 2)
        # the first attempt is stale now: its late report is refused and changes nothing
        err = error(await report(client, worker, run_id, 1, "completed"), 409, "RESOURCE_CONFLICT")
        assert "attempt 1" in err["message"]
        await finish(client, worker, second, "failed", error_message="try 2")
        clock.advance(60)
        third = await claim_one(client, worker)
        assert third["attempt"] == 3
        done = await finish(client, worker, third, "failed", error_message="try 3")
        assert (done["status"], done["retry_count"], done["attempt"], done["error_message"]) == (
            "failed", 2, 3, "try 3")
        assert [(h["status"], h["attempt"]) for h in done["history"]] == [
            ("queued", 0), ("running", 1), ("queued", 1), ("running", 2), ("queued", 2), ("running", 3),
            ("failed", 3)]
        assert "try 1" in done["history"][2]["reason"]


async def test_heartbeat_stores_fields_and_names_runs_to_abort(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        worker = (await register(client))["id"]
        task = await create_task(client, "beat")
        run_id = (await trigger(client, task["id"]))["run_id"]
        await claim_one(client, worker)
        clock.advance(5)
        beat = data(await client.post(f"/api/workers/{worker}/heartbeat", json={
            "current_task_count": 1, "load_average": 0.4, "memory_usage": 512, "cpu_usage": 25.5,
            "current_tasks": [run_id], "metadata": {"version": "1.2"}}))
        assert (beat["worker_id"], beat["status"], beat["abort_runs"]) == (worker, "active", [])
        assert beat["last_heartbeat"] == "2026-01-05T12:00:05Z" and beat["message"]
        listed = (await list_items(client, "/api/workers"))["items"][0]
        assert (listed["load_average"], listed["memory_usage"], listed["cpu_usage"]) == (0.4, 512, 25.5)
        assert (listed["current_task_count"], listed["metadata"]) == (1, {"version": "1.2"})
        assert listed["last_heartbeat"] == "2026-01-05T12:00:05Z"
        # the run moves on without this worker: the heartbeat says to drop it (and unknown runs too)
        data(await client.post(f"/api/runs/{run_id}/abort"))
        beat = data(await client.post(f"/api/workers/{worker}/heartbeat", json={"current_tasks": [run_id, 4242]}))
        assert sorted(beat["abort_runs"]) == [run_id, 4242]
        empty = data(await client.post(f"/api/workers/{worker}/heartbeat", json={}))
        assert empty["abort_runs"] == []
        error(await client.post("/api/workers/ghost/heartbeat", json={}), 404, "RESOURCE_NOT_FOUND")


async def test_update_drain_and_bad_status(app_client: httpx.AsyncClient) -> None:
    worker = await register(app_client, task_types=["shell"])
    task = await create_task(app_client, "drained")
    run_id = (await trigger(app_client, task["id"]))["run_id"]
    drained = data(await app_client.put(f"/api/workers/{worker['id']}", json={"status": "draining"}))
    assert drained["status"] == "draining" and drained["hostname"] == worker["hostname"]
    answer = await poll(app_client, worker["id"], 5)
    assert (answer["runs"], answer["status"]) == ([], "draining")
    updated = data(await app_client.put(f"/api/workers/{worker['id']}", json={
        "status": "active", "max_concurrent_tasks": 10, "task_types": ["shell", "http"], "metadata": {"a": 1}}))
    assert (updated["status"], updated["max_concurrent_tasks"], updated["task_types"], updated["metadata"]) == (
        "active", 10, ["shell", "http"], {"a": 1})
    assert [r["run_id"] for r in (await poll(app_client, worker["id"], 5))["runs"]] == [run_id]
    error(await app_client.put(f"/api/workers/{worker['id']}", json={"status": "sleeping"}), 422,
          "VALIDATION_ERROR", "status")
    error(await app_client.put(f"/api/workers/{worker['id']}", json={"task_types": ["cobol"]}), 422,
          "VALIDATION_ERROR", "task_types")
    error(await app_client.put(f"/api/workers/{worker['id']}", json={"max_concurrent_tasks": 0}), 422,
          "VALIDATION_ERROR", "max_concurrent_tasks")
    error(await app_client.put("/api/workers/ghost", json={"status": "active"}), 404, "RESOURCE_NOT_FOUND")
    assert data(await app_client.get(f"/api/workers/{worker['id']}"))["status"] == "active"


async def test_unregister_requeues_its_runs(app_client: httpx.AsyncClient) -> None:
    worker = (await register(app_client, "leaving"))["id"]
    task = await create_task(app_client, "held")
    run_id = (await trigger(app_client, task["id"]))["run_id"]
    await claim_one(app_client, worker)
    gone = data(await app_client.delete(f"/api/workers/{worker}"))
    assert gone["worker_id"] == worker and gone["message"]
    run = await get_run(app_client, run_id)
    assert (run["state"], run["worker_id"], run["retry_count"]) == ("queued", None, 1)
    error(await app_client.get(f"/api/workers/{worker}"), 404, "RESOURCE_NOT_FOUND")
    error(await app_client.delete(f"/api/workers/{worker}"), 404, "RESOURCE_NOT_FOUND")
    error(await app_client.post(f"/api/workers/{worker}/poll", json={"wait": 0}), 404, "RESOURCE_NOT_FOUND")
    assert (await list_items(app_client, "/api/workers"))["total"] == 0
    successor = (await register(app_client, "next"))["id"]
    assert (await claim_one(app_client, successor))["run_id"] == run_id
    back = await register(app_client, "leaving", id=worker)  # the same id may come back
    assert back["id"] == worker and back["status"] == "active"


async def test_detail_current_tasks_and_statistics(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        worker = (await register(client, "stats-box"))["id"]
        task = await create_task(client, "measured", retry_count=0)
        await run_task(client, task["id"], worker, clock=clock, seconds=10)
        await run_task(client, task["id"], worker, clock=clock, seconds=20)
        await run_task(client, task["id"], worker, "failed", clock=clock, seconds=5)
        run_id = (await trigger(client, task["id"]))["run_id"]
        await claim_one(client, worker)
        clock.advance(3 * 3600 + 120)
        detail = data(await client.get(f"/api/workers/{worker}"))
        assert detail["current_task_count"] == 1
        assert detail["current_tasks"] == [{"run_id": run_id, "task_id": task["id"], "task_name": "measured",
                                            "started_at": "2026-01-05T12:00:35Z", "status": "running"}]
        assert detail["statistics"] == {"total_tasks_executed": 3, "successful_tasks": 2, "failed_tasks": 1,
                                        "average_execution_time": 15.0, "uptime": "3h 2m"}


async def test_list_filters_and_paging(app_client: httpx.AsyncClient) -> None:
    a = (await register(app_client, "alpha", task_types=["python", "shell"]))["id"]
    b = (await register(app_client, "bravo", task_types=["http"]))["id"]
    c = (await register(app_client, "charlie", task_types=["shell"]))["id"]
    data(await app_client.put(f"/api/workers/{c}", json={"status": "draining"}))

    async def ids(**params: object) -> list[str]:
        page = await list_items(app_client, "/api/workers", **params)
        assert page["total"] == len(page["items"])
        return sorted(w["id"] for w in page["items"])

    assert await ids() == sorted([a, b, c])
    assert await ids(status="active") == sorted([a, b])
    assert await ids(status="draining") == [c]
    assert await ids(status="offline") == []
    assert await ids(task_type="shell") == sorted([a, c])
    assert await ids(task_type="http") == [b]
    assert await ids(task_type="python") == [a]
    assert await ids(hostname="bravo") == [b]
    assert await ids(hostname="delta") == []
    assert await ids(task_type="shell", status="active") == [a]
    page = await list_items(app_client, "/api/workers", size=2, page=2, sort="hostname", order="asc")
    assert (page["total"], page["total_pages"], [w["hostname"] for w in page["items"]]) == (3, 2, ["charlie"])
    error(await app_client.get("/api/workers", params={"sort": "ip_address"}), 422, "VALIDATION_ERROR", "sort")
    error(await app_client.get("/api/workers/nobody"), 404, "RESOURCE_NOT_FOUND")


async def test_a_poll_carries_outcomes_and_claims_after_them(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "carried", retry_count=0)
    worker = (await register(app_client, max_concurrent_tasks=1))["id"]
    first = (await trigger(app_client, task["id"]))["run_id"]
    second = (await trigger(app_client, task["id"]))["run_id"]
    claimed = await claim_one(app_client, worker)
    assert claimed["run_id"] == first
    # One slot: the next run can only be claimed once the carried outcome has freed it.
    answer = data(await app_client.post(f"/api/workers/{worker}/poll", json={
        "capacity": 1, "running": [], "wait": 0,
        "reports": [{"run_id": first, "attempt": claimed["attempt"], "outcome": "completed", "result": "42",
                     "exit_code": 0},
                    {"run_id": 999999, "attempt": 1, "outcome": "completed"}]}))
    assert answer["report"]["accepted"] == [first]
    assert [(r["run_id"], r["code"]) for r in answer["report"]["rejected"]] == [(999999, "RESOURCE_NOT_FOUND")]
    assert [r["run_id"] for r in answer["runs"]] == [second]
    done = await get_run(app_client, first)
    assert (done["status"], done["result"], done["exit_code"]) == ("completed", "42", 0)
    assert [h["status"] for h in done["history"]] == ["queued", "running", "completed"]
    # A poll without outcomes answers without a report; a malformed outcome is refused before anything.
    assert "report" not in await poll(app_client, worker, 0, [second])
    error(await app_client.post(f"/api/workers/{worker}/poll", json={
        "capacity": 1, "reports": [{"run_id": second, "attempt": 1, "outcome": "finished"}]}), 422,
        "VALIDATION_ERROR")
    assert (await get_run(app_client, second))["status"] == "running"
