"""/api/runs over HTTP on both databases: list and its filters, detail, logs, restart, abort."""

from __future__ import annotations

import json

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
    poll,
    register,
    report,
    run_task,
    send_logs,
    trigger,
)


async def test_list_filters(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        one = await create_task(client, "one", retry_count=0)
        two = await create_task(client, "two", task_type="python", command="x.py")
        w1 = (await register(client, "h1", task_types=["shell"]))["id"]
        w2 = (await register(client, "h2", task_types=["python"]))["id"]
        completed = await run_task(client, one["id"], w1)
        failed = await run_task(client, one["id"], w1, "failed", error_message="bad")
        clock.advance(86400)  # the next day: 2026-01-06
        running = (await trigger(client, two["id"]))["run_id"]
        assert (await claim_one(client, w2))["run_id"] == running
        queued = (await trigger(client, one["id"]))["run_id"]
        aborted = (await trigger(client, two["id"]))["run_id"]
        data(await client.post(f"/api/runs/{aborted}/abort"))

        async def ids(**params: object) -> list[int]:
            page = await list_items(client, "/api/runs", **params)
            assert page["total"] == len(page["items"])
            return sorted(r["id"] for r in page["items"])

        assert await ids() == sorted([completed["id"], failed["id"], running, queued, aborted])
        assert await ids(task_id=one["id"]) == sorted([completed["id"], failed["id"], queued])
        assert await ids(task_id=two["id"]) == sorted([running, aborted])
        assert await ids(task_id=999) == []
        assert await ids(status="pending") == [queued]  # "pending" covers queued runs
        assert await ids(status="queued") == [queued]
        assert await ids(status="running") == [running]
        assert await ids(status="completed") == [completed["id"]]
        assert await ids(status="failed") == [failed["id"]]
        assert await ids(status="aborted") == [aborted]
        assert await ids(status="COMPLETED") == [completed["id"]]
        assert await ids(worker_id=w1) == sorted([completed["id"], failed["id"]])
        assert await ids(worker_id=w2) == [running]
        assert await ids(worker_id="nobody") == []
        assert await ids(start_date="2026-01-06") == sorted([running, queued, aborted])
        assert await ids(end_date="2026-01-05") == sorted([completed["id"], failed["id"]])
        assert await ids(start_date="2026-01-05", end_date="2026-01-05") == sorted([completed["id"], failed["id"]])
        assert await ids(start_date="2026-01-07") == []
        assert await ids(task_id=one["id"], status="pending", start_date="2026-01-06") == [queued]

        item = (await list_items(client, "/api/runs", status="completed"))["items"][0]
        assert {"id", "task_id", "task_name", "worker_id", "status", "started_at", "completed_at", "result",
                "error_message", "retry_count", "created_at"} <= set(item)
        assert (item["task_name"], item["worker_id"]) == ("one", w1)

        for bad in ("2026-13-01", "yesterday", "01/05/2026", "2026-01-05T00:00:00"):
            error(await client.get("/api/runs", params={"start_date": bad}), 422, "VALIDATION_ERROR", "start_date")
        error(await client.get("/api/runs", params={"end_date": "2026-02-30"}), 422, "VALIDATION_ERROR",
              "end_date")
        error(await client.get("/api/runs", params={"start_date": "2026-01-06", "end_date": "2026-01-05"}), 422,
              "VALIDATION_ERROR", "end_date")
        error(await client.get("/api/runs", params={"status": "exploded"}), 422, "VALIDATION_ERROR", "status")
        error(await client.get("/api/runs", params={"sort": "parameters"}), 422, "VALIDATION_ERROR", "sort")
        error(await client.get("/api/runs", params={"task_id": "abc"}), 422, "VALIDATION_ERROR", "task_id")


async def test_list_pages_and_sorts(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "many")
        made = []
        for priority in ("low", "critical", "normal", "high", "normal"):
            made.append((await trigger(client, task["id"], priority=priority))["run_id"])
            clock.advance(1)
        page = await list_items(client, "/api/runs", size=2, page=2)
        assert (page["total"], page["page"], page["size"], page["total_pages"]) == (5, 2, 2, 3)
        assert [r["id"] for r in page["items"]] == made[::-1][2:4]
        asc = await list_items(client, "/api/runs", order="asc")
        assert [r["id"] for r in asc["items"]] == made
        by_priority = await list_items(client, "/api/runs", sort="priority", order="desc")
        assert [r["priority"] for r in by_priority["items"]] == ["critical", "high", "normal", "normal", "low"]


async def test_detail_logs_and_history(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "logged", retry_count=0)
        worker = await register(client, "box-7")
        run_id = (await trigger(client, task["id"], parameters={"input": "data.csv"}))["run_id"]
        claimed = await claim_one(client, worker["id"])
        assert claimed["parameters"] == {"input": "data.csv"} and claimed["command"] == "echo logged"
        running = await get_run(client, run_id)
        assert (running["status"], running["worker_id"], running["worker_hostname"]) == (
            "running", worker["id"], "box-7")
        assert running["started_at"] == "2026-01-05T12:00:00Z" and running["execution_time"] is None
        # logs stream in before the outcome
        lines = [{"runId": run_id, "message": "starting", "level": "info", "stream": "stdout"},
                 {"runId": run_id, "message": "warming up", "level": "debug", "stream": "stdout"}]
        sent = await client.post("/api/tracking/batch", json={"logs": lines})
        assert sent.json() == {"accepted": 2}, sent.text
        clock.advance(30.5)
        await send_logs(client, run_id, [{"attempt": claimed["attempt"], "message": "done", "stream": "stderr"}])
        done = await finish(client, worker["id"], claimed, result="processed 10 rows", exit_code=0)
        assert (done["status"], done["state"], done["result"], done["exit_code"]) == (
            "completed", "completed", "processed 10 rows", 0)
        assert done["execution_time"] == 30.5
        assert (done["started_at"], done["completed_at"]) == ("2026-01-05T12:00:00Z", "2026-01-05T12:00:30.500000Z")
        assert done["parameters"] == {"input": "data.csv"}
        assert (done["worker_hostname"], done["error_message"], done["retry_count"]) == ("box-7", None, 0)
        assert [line["message"] for line in done["logs"]] == ["starting", "warming up", "done"]
        assert [line["level"] for line in done["logs"]] == ["info", "debug", "info"]
        assert done["logs"][2]["stream"] == "stderr" and done["logs"][0]["timestamp"]
        assert [(h["status"], h["attempt"]) for h in done["history"]] == [
            ("queued", 0), ("running", 1), ("completed", 1)]
        assert done["history"][1]["worker_id"] == worker["id"]

        logs = data(await client.get(f"/api/runs/{run_id}/logs"))
        assert (logs["run_id"], logs["status"]) == (run_id, "completed")
        assert [line["message"] for line in logs["items"]] == ["starting", "warming up", "done"]
        first_id = logs["items"][0]["id"]
        assert logs["next_after"] == logs["items"][-1]["id"]
        later = data(await client.get(f"/api/runs/{run_id}/logs", params={"after": first_id}))
        assert [line["message"] for line in later["items"]] == ["warming up", "done"]
        limited = data(await client.get(f"/api/runs/{run_id}/logs", params={"after": first_id, "limit": 1}))
        assert [line["message"] for line in limited["items"]] == ["warming up"]
        end = data(await client.get(f"/api/runs/{run_id}/logs", params={"after": logs["next_after"]}))
        assert (end["items"], end["next_after"]) == ([], logs["next_after"])
        error(await client.get(f"/api/runs/{run_id}/logs", params={"after": -1}), 422, "VALIDATION_ERROR", "after")
        error(await client.get("/api/runs/98765/logs"), 404, "RESOURCE_NOT_FOUND")
        error(await client.get("/api/runs/98765"), 404, "RESOURCE_NOT_FOUND")


async def test_failure_is_recorded(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "fails", retry_count=0)
    worker = (await register(app_client))["id"]
    run = await run_task(app_client, task["id"], worker, "failed", error_message="exit 2", exit_code=2,
                         logs=[{"message": "traceback", "level": "error"}])
    assert (run["status"], run["error_message"], run["exit_code"]) == ("failed", "exit 2", 2)
    assert run["logs"][0]["level"] == "error"
    timed_out = await run_task(app_client, task["id"], worker, "timed_out")
    assert timed_out["status"] == "failed" and timed_out["error_message"] == "timed_out"


async def test_restart(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "again", retry_count=0)
    worker = (await register(app_client))["id"]
    original_id = (await trigger(app_client, task["id"], parameters={"day": "monday"}, priority="high"))["run_id"]
    await finish(app_client, worker, await claim_one(app_client, worker), "failed", error_message="nope")
    answer = data(await app_client.post(f"/api/runs/{original_id}/restart"))
    assert answer["original_run_id"] == original_id and answer["new_run_id"] != original_id
    assert answer["status"] == "pending" and answer["started_at"]
    new = await get_run(app_client, answer["new_run_id"])
    assert (new["restarted_from"], new["trigger"], new["state"]) == (original_id, "restart", "queued")
    assert (new["parameters"], new["priority"], new["attempt"], new["retry_count"]) == (
        {"day": "monday"}, "high", 0, 0)
    assert (await get_run(app_client, original_id))["status"] == "failed"  # the original stays as it was
    claimed = await claim_one(app_client, worker)
    assert claimed["run_id"] == answer["new_run_id"]
    # restarting an active run is allowed too: it is a new run either way
    twice = data(await app_client.post(f"/api/runs/{answer['new_run_id']}/restart"))
    assert (await get_run(app_client, twice["new_run_id"]))["restarted_from"] == answer["new_run_id"]
    error(await app_client.post("/api/runs/31337/restart"), 404, "RESOURCE_NOT_FOUND")


async def test_abort_pending_running_and_finished(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "stoppable")
    worker = (await register(app_client))["id"]
    pending_id = (await trigger(app_client, task["id"]))["run_id"]
    aborted = data(await app_client.post(f"/api/runs/{pending_id}/abort"))
    assert (aborted["id"], aborted["status"]) == (pending_id, "aborted")
    assert aborted["completed_at"] and aborted["message"]
    run = await get_run(app_client, pending_id)
    assert (run["status"], run["worker_id"], run["started_at"]) == ("aborted", None, None)
    assert (await poll(app_client, worker, 5))["runs"] == []  # nothing left to claim
    error(await app_client.post(f"/api/runs/{pending_id}/abort"), 409, "RESOURCE_CONFLICT")

    running_id = (await trigger(app_client, task["id"]))["run_id"]
    claimed = await claim_one(app_client, worker)
    assert claimed["run_id"] == running_id
    assert data(await app_client.post(f"/api/runs/{running_id}/abort"))["status"] == "aborted"
    assert (await get_run(app_client, running_id))["status"] == "aborted"
    answer = await poll(app_client, worker, 1, [running_id])
    assert (answer["abort_runs"], answer["runs"]) == ([running_id], [])
    beat = data(await app_client.post(f"/api/workers/{worker}/heartbeat", json={"current_tasks": [running_id]}))
    assert beat["abort_runs"] == [running_id]
    # the killed attempt may still send its last lines; its outcome does not change the status
    await send_logs(app_client, running_id, [{"message": "killed"}])
    late = data(await report(app_client, worker, running_id, claimed["attempt"], "completed"))
    assert late["accepted"] == [running_id]
    run = await get_run(app_client, running_id)
    assert run["status"] == "aborted" and [line["message"] for line in run["logs"]] == ["killed"]

    done = await run_task(app_client, task["id"], worker)
    err = error(await app_client.post(f"/api/runs/{done['id']}/abort"), 409, "RESOURCE_CONFLICT")
    assert "completed" in err["message"]
    error(await app_client.post("/api/runs/55555/abort"), 404, "RESOURCE_NOT_FOUND")


async def test_report_keeps_what_the_task_printed(app_client: httpx.AsyncClient) -> None:
    """Log lines carry the worker's own timestamps; NUL bytes and broken text are kept, not refused."""
    task = await create_task(app_client, "binary-output")
    worker = (await register(app_client))["id"]
    run_id = (await trigger(app_client, task["id"]))["run_id"]
    claimed = await claim_one(app_client, worker)
    lines = [{"message": "first", "timestamp": "2026-01-05T13:00:01.500000+01:00", "level": "warn"},
             {"message": "naive", "timestamp": "2026-01-05T12:00:02"},
             {"message": "a\u0000b", "stream": "stderr"}]
    await send_logs(app_client, run_id, lines)
    one = json.dumps({"run_id": run_id, "attempt": claimed["attempt"], "outcome": "completed"})
    content = one[:-1] + ', "result": "x\\ud800y"}'  # a lone surrogate, which json.dumps would not write
    content = '{"reports": [' + content + "]}"
    response = await app_client.post(f"/api/workers/{worker}/report", content=content.encode(),
                                     headers={"Content-Type": "application/json"})
    assert data(response)["accepted"] == [run_id]
    run = await get_run(app_client, run_id)
    assert run["status"] == "completed" and run["result"].startswith("x") and "\ud800" not in run["result"]
    assert [line["timestamp"] for line in run["logs"][:2]] == ["2026-01-05T12:00:01.500000Z",
                                                               "2026-01-05T12:00:02Z"]
    assert run["logs"][0]["level"] == "warn"
    assert run["logs"][2]["message"] == "a\ufffdb"
