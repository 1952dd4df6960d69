"""/api/tasks over HTTP on both databases: create, list, detail, update, delete, trigger, pause, resume,
idempotent requests, and runs that wait on dependencies."""

from __future__ import annotations

import uuid

import httpx
from helpers import (
    claim_one,
    clocked,
    create_task,
    data,
    error,
    finish,
    get_run,
    get_task,
    list_items,
    poll,
    register,
    run_task,
    trigger,
)

# -- create -------------------------------------------------------------------------------------------


async def test_create_echoes_every_field(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        dep = await create_task(client, "extract")
        body = {
            "name": "data_processing", "description": "process the daily data", "task_type": "python",
            "executor": "python3", "command": "process_data.py", "arguments": ["--input", "data.csv"],
            "schedule": "0 2 * * *", "timezone": "Asia/Shanghai", "catchup": "none", "priority": "high",
            "retry_count": 5, "timeout_seconds": 120, "dependencies": ["extract"], "tags": ["data", "daily"],
            "metadata": {"owner": "ops", "nested": {"a": [1, 2]}},
        }
        response = await client.post("/api/tasks", json=body)
        task = data(response, 201)
        for key, value in body.items():
            if key != "dependencies":
                assert task[key] == value, key
        assert task["dependencies"] == [dep["id"]]  # names resolve to ids
        assert isinstance(task["id"], int) and task["id"] > dep["id"]
        assert str(uuid.UUID(task["uuid"])) == task["uuid"]
        assert task["status"] == "active"
        assert task["created_at"] == task["updated_at"] == "2026-01-05T12:00:00Z"
        assert task["last_run_at"] is None
        # 02:00 in Shanghai (UTC+8) after 2026-01-05T12:00Z is 2026-01-06T02:00+08:00
        assert task["next_run_at"] == "2026-01-05T18:00:00Z"
        assert await get_task(client, task["id"]) == {**task, "statistics": {
            "total_runs": 0, "successful_runs": 0, "failed_runs": 0, "aborted_runs": 0,
            "average_execution_time": None, "last_execution_status": None}}


async def test_create_defaults(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        task = data(await client.post("/api/tasks", json={"name": "t", "task_type": "http",
                                                          "command": "https://example.com"}), 201)
        assert task["executor"] == "http"  # defaults to the task type
        assert (task["priority"], task["retry_count"], task["timeout_seconds"]) == ("normal", 3, 3600)
        assert (task["schedule"], task["next_run_at"], task["description"]) == (None, None, None)
        assert (task["arguments"], task["tags"], task["metadata"], task["dependencies"]) == ([], [], {}, [])
        assert (task["timezone"], task["catchup"], task["status"]) == ("UTC", "latest", "active")
        utc = await create_task(client, "hourly", schedule="0 * * * *")
        assert utc["next_run_at"] == "2026-01-05T13:00:00Z"
        by_id = await create_task(client, "after", dependencies=[task["id"], str(utc["id"])])
        assert by_id["dependencies"] == sorted([task["id"], utc["id"]])


async def test_create_name_conflict_and_reuse_after_delete(app_client: httpx.AsyncClient) -> None:
    first = await create_task(app_client, "unique")
    err = error(await app_client.post("/api/tasks", json={"name": "unique", "task_type": "shell",
                                                         "command": "x"}), 409, "RESOURCE_CONFLICT", "name")
    assert "unique" in err["message"]
    data(await app_client.delete(f"/api/tasks/{first['id']}"))
    again = await create_task(app_client, "unique")
    assert again["id"] != first["id"]


# -- list ---------------------------------------------------------------------------------------------


async def test_list_pages(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        ids = []
        for i in range(5):
            ids.append((await create_task(client, f"task-{i}"))["id"])
            clock.advance(1)
        page = await list_items(client, "/api/tasks")
        assert (page["total"], page["page"], page["size"], page["total_pages"]) == (5, 1, 20, 1)
        assert [t["id"] for t in page["items"]] == ids[::-1]  # created_at desc by default
        summary = page["items"][0]
        assert {"id", "name", "description", "task_type", "status", "priority", "created_at",
                "next_run_at"} <= set(summary)
        seen = []
        for number, expected in ((1, 2), (2, 2), (3, 1)):
            page = await list_items(client, "/api/tasks", page=number, size=2)
            assert (page["total"], page["page"], page["size"], page["total_pages"]) == (5, number, 2, 3)
            assert len(page["items"]) == expected
            seen += [t["id"] for t in page["items"]]
        assert seen == ids[::-1]
        beyond = await list_items(client, "/api/tasks", page=4, size=2)
        assert beyond["items"] == [] and beyond["total"] == 5


async def test_list_filters(app_client: httpx.AsyncClient) -> None:
    a = await create_task(app_client, "Nightly-Backup", description="copies the DATABASE", priority="high")
    b = await create_task(app_client, "report", task_type="python", command="report.py", priority="low",
                          description="weekly numbers")
    c = await create_task(app_client, "ping", task_type="http", command="https://x", description="100% up")
    data(await app_client.post(f"/api/tasks/{b['id']}/pause"))

    async def ids(**params: object) -> list[int]:
        page = await list_items(app_client, "/api/tasks", **params)
        assert page["total"] == len(page["items"])
        return sorted(t["id"] for t in page["items"])

    assert await ids(status="paused") == [b["id"]]
    assert await ids(status="active") == sorted([a["id"], c["id"]])
    assert await ids(task_type="python") == [b["id"]]
    assert await ids(task_type="http") == [c["id"]]
    assert await ids(priority="high") == [a["id"]]
    assert await ids(priority="normal") == [c["id"]]
    assert await ids(priority="critical") == []
    assert await ids(search="backup") == [a["id"]]  # name, any case
    assert await ids(search="database") == [a["id"]]  # description, any case
    assert await ids(search="WEEKLY") == [b["id"]]
    assert await ids(search="%") == [c["id"]]  # a literal percent, not a wildcard
    assert await ids(search="nothing-like-this") == []
    assert await ids(status="active", priority="high", search="nightly") == [a["id"]]
    assert await ids(status="active", task_type="python") == []


async def test_list_sort_and_order(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        made = {}
        for name, priority in (("bravo", "low"), ("alpha", "critical"), ("delta", "normal"),
                               ("charlie", "high")):
            made[name] = (await create_task(client, name, priority=priority))["id"]
            clock.advance(60)

        async def names(**params: object) -> list[str]:
            return [t["name"] for t in (await list_items(client, "/api/tasks", **params))["items"]]

        assert await names() == ["charlie", "delta", "alpha", "bravo"]
        assert await names(order="asc") == ["bravo", "alpha", "delta", "charlie"]
        assert await names(sort="created_at", order="DESC") == ["charlie", "delta", "alpha", "bravo"]
        assert await names(sort="name", order="asc") == ["alpha", "bravo", "charlie", "delta"]
        assert await names(sort="name", order="desc") == ["delta", "charlie", "bravo", "alpha"]
        assert await names(sort="id", order="asc") == ["bravo", "alpha", "delta", "charlie"]
        # priority sorts by rank, not alphabetically
        assert await names(sort="priority", order="desc") == ["alpha", "charlie", "delta", "bravo"]
        assert await names(sort="priority", order="asc") == ["bravo", "delta", "charlie", "alpha"]
        error(await client.get("/api/tasks", params={"sort": "command"}), 422, "VALIDATION_ERROR", "sort")
        error(await client.get("/api/tasks", params={"sort": "name; DROP TABLE tasks"}), 422,
              "VALIDATION_ERROR", "sort")
        error(await client.get("/api/tasks", params={"order": "sideways"}), 422, "VALIDATION_ERROR", "order")


# -- detail and statistics ----------------------------------------------------------------------------


async def test_detail_statistics_follow_completed_runs(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "stats", retry_count=0)
        worker = (await register(client))["id"]
        first = await run_task(client, task["id"], worker, clock=clock, seconds=2)
        assert first["execution_time"] == 2.0
        await run_task(client, task["id"], worker, clock=clock, seconds=4)
        failed = await run_task(client, task["id"], worker, "failed", clock=clock, seconds=1,
                                error_message="boom", exit_code=3)
        assert failed["status"] == "failed"
        aborted = await trigger(client, task["id"])
        data(await client.post(f"/api/runs/{aborted['run_id']}/abort"))
        detail = await get_task(client, task["id"])
        assert detail["statistics"] == {"total_runs": 4, "successful_runs": 2, "failed_runs": 1,
                                        "aborted_runs": 1, "average_execution_time": 3.0,
                                        "last_execution_status": "aborted"}
        assert detail["last_run_at"] == "2026-01-05T12:00:07Z"
        await run_task(client, task["id"], worker, clock=clock, seconds=3)
        stats = (await get_task(client, task["id"]))["statistics"]
        assert stats["last_execution_status"] == "success"
        assert (stats["total_runs"], stats["successful_runs"], stats["average_execution_time"]) == (5, 3, 3.0)
        # the trigger answer now estimates completion from the average
        answer = await trigger(client, task["id"])
        assert answer["estimated_completion"] == "2026-01-05T12:00:13Z"


# -- update -------------------------------------------------------------------------------------------


async def test_update_is_partial(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "editable", description="old", tags=["a"], metadata={"k": 1},
                                 arguments=["-v"])
        clock.advance(30)
        updated = data(await client.put(f"/api/tasks/{task['id']}", json={"priority": "high", "tags": ["a", "b"],
                                                                          "retry_count": 5}))
        assert (updated["priority"], updated["tags"], updated["retry_count"]) == ("high", ["a", "b"], 5)
        for key in ("name", "description", "command", "arguments", "metadata", "task_type", "executor",
                    "timeout_seconds", "created_at", "uuid", "schedule", "status"):
            assert updated[key] == task[key], key
        assert updated["updated_at"] == "2026-01-05T12:00:30Z"
        again = data(await client.put(f"/api/tasks/{task['id']}", json={}))
        assert again["priority"] == "high"
        cleared = data(await client.put(f"/api/tasks/{task['id']}", json={"description": None,
                                                                          "name": "renamed"}))
        assert (cleared["description"], cleared["name"]) == (None, "renamed")
        assert (await get_task(client, task["id"]))["name"] == "renamed"
        same = data(await client.put(f"/api/tasks/{task['id']}", json={"name": "renamed"}))
        assert same["name"] == "renamed"


async def test_update_rename_conflict(app_client: httpx.AsyncClient) -> None:
    await create_task(app_client, "taken")
    other = await create_task(app_client, "other")
    error(await app_client.put(f"/api/tasks/{other['id']}", json={"name": "taken"}), 409, "RESOURCE_CONFLICT",
          "name")
    assert (await get_task(app_client, other["id"]))["name"] == "other"
    error(await app_client.put("/api/tasks/999999", json={"name": "x"}), 404, "RESOURCE_NOT_FOUND")


async def test_update_schedule_recomputes_next_run(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "cron", schedule="0 2 * * *")
        assert task["next_run_at"] == "2026-01-06T02:00:00Z"
        clock.advance(3600)  # 13:00Z
        changed = data(await client.put(f"/api/tasks/{task['id']}", json={"schedule": "*/15 * * * *"}))
        assert (changed["schedule"], changed["next_run_at"]) == ("*/15 * * * *", "2026-01-05T13:15:00Z")
        zoned = data(await client.put(f"/api/tasks/{task['id']}", json={"schedule": "0 9 * * *",
                                                                        "timezone": "America/New_York"}))
        assert zoned["next_run_at"] == "2026-01-05T14:00:00Z"  # 09:00 EST
        tz_only = data(await client.put(f"/api/tasks/{task['id']}", json={"timezone": "Europe/Berlin"}))
        assert tz_only["next_run_at"] == "2026-01-06T08:00:00Z"  # 09:00 CET tomorrow
        unchanged = data(await client.put(f"/api/tasks/{task['id']}", json={"priority": "low"}))
        assert unchanged["next_run_at"] == "2026-01-06T08:00:00Z"
        cleared = data(await client.put(f"/api/tasks/{task['id']}", json={"schedule": None}))
        assert (cleared["schedule"], cleared["next_run_at"]) == (None, None)
        assert (await get_task(client, task["id"]))["schedule"] is None
        error(await client.put(f"/api/tasks/{task['id']}", json={"schedule": "not a cron"}), 422,
              "VALIDATION_ERROR", "schedule")
        error(await client.put(f"/api/tasks/{task['id']}", json={"timezone": "Mars/Olympus"}), 422,
              "VALIDATION_ERROR", "timezone")
        # a paused task keeps no next run, even when its schedule changes; resuming plans from now
        data(await client.post(f"/api/tasks/{task['id']}/pause"))
        paused = data(await client.put(f"/api/tasks/{task['id']}", json={"schedule": "30 * * * *"}))
        assert (paused["status"], paused["next_run_at"]) == ("paused", None)
        resumed = data(await client.post(f"/api/tasks/{task['id']}/resume"))
        assert (resumed["status"], resumed["next_run_at"]) == ("active", "2026-01-05T13:30:00Z")


async def test_update_dependencies_and_cycles(app_client: httpx.AsyncClient) -> None:
    a = await create_task(app_client, "a")
    b = await create_task(app_client, "b")
    c = await create_task(app_client, "c")
    assert data(await app_client.put(f"/api/tasks/{a['id']}", json={"dependencies": ["b"]}))["dependencies"] \
        == [b["id"]]
    assert data(await app_client.put(f"/api/tasks/{b['id']}", json={"dependencies": [c["id"]]}))[
        "dependencies"] == [c["id"]]
    err = error(await app_client.put(f"/api/tasks/{c['id']}", json={"dependencies": [a["id"]]}), 422,
                "VALIDATION_ERROR", "dependencies")
    assert err["details"]["rule"] == "acyclic"
    assert (await get_task(app_client, c["id"]))["dependencies"] == []  # nothing changed
    err = error(await app_client.put(f"/api/tasks/{a['id']}", json={"dependencies": [a["id"]]}), 422,
                "VALIDATION_ERROR", "dependencies")
    assert err["details"]["rule"] == "acyclic"
    err = error(await app_client.put(f"/api/tasks/{a['id']}", json={"dependencies": ["nope"]}), 422,
                "VALIDATION_ERROR", "dependencies")
    assert err["details"]["rule"] == "exists"
    err = error(await app_client.post("/api/tasks", json={"name": "d", "task_type": "shell", "command": "x",
                                                          "dependencies": [987654]}), 422,
                "VALIDATION_ERROR", "dependencies")
    assert err["details"]["rule"] == "exists"
    assert data(await app_client.put(f"/api/tasks/{a['id']}", json={"dependencies": []}))["dependencies"] == []
    # now c -> a is fine
    assert data(await app_client.put(f"/api/tasks/{c['id']}", json={"dependencies": ["a"]}))[
        "dependencies"] == [a["id"]]


# -- delete -------------------------------------------------------------------------------------------


async def test_delete_is_soft_and_aborts_active_runs(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "doomed")
    worker = (await register(app_client))["id"]
    done = await run_task(app_client, task["id"], worker)
    running_id = (await trigger(app_client, task["id"]))["run_id"]
    running = await claim_one(app_client, worker)
    assert running["run_id"] == running_id
    queued_id = (await trigger(app_client, task["id"]))["run_id"]

    deleted = data(await app_client.delete(f"/api/tasks/{task['id']}"))
    assert deleted["deleted_id"] == task["id"] and deleted["message"]

    error(await app_client.get(f"/api/tasks/{task['id']}"), 404, "RESOURCE_NOT_FOUND")
    error(await app_client.delete(f"/api/tasks/{task['id']}"), 404, "RESOURCE_NOT_FOUND")
    error(await app_client.post(f"/api/tasks/{task['id']}/trigger"), 404, "RESOURCE_NOT_FOUND")
    error(await app_client.put(f"/api/tasks/{task['id']}", json={"priority": "low"}), 404, "RESOURCE_NOT_FOUND")
    error(await app_client.post(f"/api/tasks/{task['id']}/pause"), 404, "RESOURCE_NOT_FOUND")
    assert (await list_items(app_client, "/api/tasks"))["total"] == 0

    assert (await get_run(app_client, done["id"]))["status"] == "completed"
    for run_id in (running_id, queued_id):
        run = await get_run(app_client, run_id)
        assert run["status"] == "aborted" and run["completed_at"] is not None
        assert "doomed" in run["error_message"]
    runs = await list_items(app_client, "/api/runs", task_id=task["id"])
    assert runs["total"] == 3
    # the worker holding the running one hears about it, and nothing is left to claim
    answer = await poll(app_client, worker, 1, [running_id])
    assert answer["abort_runs"] == [running_id] and answer["runs"] == []
    # a run of a deleted task cannot be restarted
    error(await app_client.post(f"/api/runs/{done['id']}/restart"), 409, "RESOURCE_CONFLICT")


# -- trigger, pause, resume ---------------------------------------------------------------------------


async def test_trigger_with_overrides_and_without_body(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "job", timeout_seconds=600)
    answer = await trigger(app_client, task["id"], parameters={"input": "data.csv", "n": 3},
                           priority="critical", timeout_seconds=60)
    assert answer["task_id"] == task["id"] and isinstance(answer["run_id"], int)
    assert (answer["status"], answer["worker_id"], answer["started_at"]) == ("pending", None, None)
    assert "estimated_completion" in answer
    run = await get_run(app_client, answer["run_id"])
    assert run["parameters"] == {"input": "data.csv", "n": 3}
    assert (run["priority"], run["timeout_seconds"], run["trigger"]) == ("critical", 60, "manual")
    assert (run["status"], run["state"], run["task_name"]) == ("pending", "queued", "job")

    plain = await trigger(app_client, task["id"])
    run = await get_run(app_client, plain["run_id"])
    assert (run["parameters"], run["priority"], run["timeout_seconds"]) == ({}, "normal", 600)
    no_body = data(await app_client.post(f"/api/tasks/{task['id']}/trigger"))
    assert no_body["run_id"] not in (answer["run_id"], plain["run_id"])
    assert (await get_task(app_client, task["id"]))["last_run_at"] is not None

    error(await app_client.post(f"/api/tasks/{task['id']}/trigger", json={"priority": "urgent"}), 422,
          "VALIDATION_ERROR", "priority")
    error(await app_client.post(f"/api/tasks/{task['id']}/trigger", json={"timeout_seconds": 0}), 422,
          "VALIDATION_ERROR", "timeout_seconds")
    error(await app_client.post("/api/tasks/424242/trigger"), 404, "RESOURCE_NOT_FOUND")


async def test_pause_and_resume(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "cron", schedule="0 * * * *")
        clock.advance(7200)  # 14:00Z
        paused = data(await client.post(f"/api/tasks/{task['id']}/pause"))
        assert paused == {"id": task["id"], "status": "paused", "updated_at": "2026-01-05T14:00:00Z",
                          "next_run_at": None}
        assert (await get_task(client, task["id"]))["status"] == "paused"
        err = error(await client.post(f"/api/tasks/{task['id']}/trigger", json={}), 409, "RESOURCE_CONFLICT")
        assert "paused" in err["message"]
        assert data(await client.post(f"/api/tasks/{task['id']}/pause"))["status"] == "paused"
        clock.advance(600)
        resumed = data(await client.post(f"/api/tasks/{task['id']}/resume"))
        assert resumed["status"] == "active" and resumed["next_run_at"] == "2026-01-05T15:00:00Z"
        assert resumed["updated_at"] == "2026-01-05T14:10:00Z"
        assert (await trigger(client, task["id"]))["status"] == "pending"
        error(await client.post("/api/tasks/777/pause"), 404, "RESOURCE_NOT_FOUND")
        error(await client.post("/api/tasks/777/resume"), 404, "RESOURCE_NOT_FOUND")


# -- idempotency --------------------------------------------------------------------------------------


async def test_idempotent_create(app_client: httpx.AsyncClient) -> None:
    body = {"name": "once", "task_type": "shell", "command": "echo once"}
    headers = {"Idempotency-Key": "create-1"}
    first = await app_client.post("/api/tasks", json=body, headers=headers)
    created = data(first, 201)
    assert "idempotent-replayed" not in first.headers
    replay = await app_client.post("/api/tasks", json=body, headers=headers)
    assert data(replay, 201) == created
    assert replay.headers["idempotent-replayed"] == "true"
    assert (await list_items(app_client, "/api/tasks"))["total"] == 1
    error(await app_client.post("/api/tasks", json={**body, "command": "echo twice"}, headers=headers), 409,
          "RESOURCE_CONFLICT")
    # without a key the same body is a new request (and here a name conflict)
    error(await app_client.post("/api/tasks", json=body), 409, "RESOURCE_CONFLICT", "name")


async def test_idempotent_trigger(app_client: httpx.AsyncClient) -> None:
    task = await create_task(app_client, "trig")
    url = f"/api/tasks/{task['id']}/trigger"
    first = data(await app_client.post(url, json={"parameters": {"x": 1}}, headers={"Idempotency-Key": "k1"}))
    replay = await app_client.post(url, json={"parameters": {"x": 1}}, headers={"Idempotency-Key": "k1"})
    assert data(replay)["run_id"] == first["run_id"]
    assert replay.headers["idempotent-replayed"] == "true"
    error(await app_client.post(url, json={"parameters": {"x": 2}}, headers={"Idempotency-Key": "k1"}), 409,
          "RESOURCE_CONFLICT")
    empty = data(await app_client.post(url, headers={"Idempotency-Key": "k2"}))
    empty_again = await app_client.post(url, headers={"Idempotency-Key": "k2"})
    assert data(empty_again)["run_id"] == empty["run_id"] != first["run_id"]
    assert empty_again.headers["idempotent-replayed"] == "true"
    other = data(await app_client.post(url, json={"parameters": {"x": 1}}, headers={"Idempotency-Key": "k3"}))
    assert other["run_id"] not in (first["run_id"], empty["run_id"])
    assert (await list_items(app_client, "/api/runs", task_id=task["id"]))["total"] == 3


# -- dependencies -------------------------------------------------------------------------------------


async def test_dependency_is_triggered_and_releases_the_waiter(app_client: httpx.AsyncClient) -> None:
    b = await create_task(app_client, "b")
    a = await create_task(app_client, "a", dependencies=["b"])
    worker = (await register(app_client))["id"]
    a_run_id = (await trigger(app_client, a["id"]))["run_id"]
    b_runs = (await list_items(app_client, "/api/runs", task_id=b["id"]))["items"]
    assert len(b_runs) == 1 and b_runs[0]["trigger"] == "dependency"
    b_run_id = b_runs[0]["id"]
    a_run = await get_run(app_client, a_run_id)
    assert (a_run["status"], a_run["state"], a_run["waiting_on"]) == ("pending", "pending", [b_run_id])
    waiting = await list_items(app_client, "/api/runs", status="waiting")
    assert [r["id"] for r in waiting["items"]] == [a_run_id]

    claimed = await claim_one(app_client, worker)  # only B is claimable
    assert claimed["run_id"] == b_run_id
    assert (await poll(app_client, worker, 5, [b_run_id]))["runs"] == []
    await finish(app_client, worker, claimed)
    a_run = await get_run(app_client, a_run_id)
    assert (a_run["status"], a_run["state"], a_run["waiting_on"]) == ("pending", "queued", [])
    assert any("b" in (h["reason"] or "") for h in a_run["history"])
    assert (await claim_one(app_client, worker))["run_id"] == a_run_id


async def test_dependency_failure_message_names_the_dependency(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        await create_task(client, "upstream", retry_count=1)
        a = await create_task(client, "downstream", dependencies=["upstream"])
        worker = (await register(client))["id"]
        a_run_id = (await trigger(client, a["id"]))["run_id"]
        first = await claim_one(client, worker)
        await finish(client, worker, first, "failed", error_message="disk full")
        assert (await get_run(client, a_run_id))["state"] == "pending"  # retrying: A keeps waiting
        clock.advance(5)
        second = await claim_one(client, worker)
        assert (second["run_id"], second["attempt"]) == (first["run_id"], 2)
        await finish(client, worker, second, "failed", error_message="disk still full")
        a_run = await get_run(client, a_run_id)
        assert a_run["status"] == "failed"
        assert "upstream" in a_run["error_message"] and "disk still full" in a_run["error_message"]
        assert a_run["started_at"] is None


async def test_fresh_dependency_queues_at_once_and_inflight_is_shared(app_client: httpx.AsyncClient) -> None:
    b = await create_task(app_client, "dep")
    a = await create_task(app_client, "main", dependencies=[b["id"]])
    worker = (await register(app_client))["id"]
    await run_task(app_client, b["id"], worker)  # B succeeded, A never did
    run = await get_run(app_client, (await trigger(app_client, a["id"]))["run_id"])
    assert (run["state"], run["waiting_on"]) == ("queued", [])
    assert (await list_items(app_client, "/api/runs", task_id=b["id"]))["total"] == 1
    await finish(app_client, worker, await claim_one(app_client, worker))  # A succeeds after B

    # B's success is now older than A's: A needs B again, and two A runs share one B run
    first = (await trigger(app_client, a["id"]))["run_id"]
    second = (await trigger(app_client, a["id"]))["run_id"]
    b_runs = (await list_items(app_client, "/api/runs", task_id=b["id"], status="pending"))["items"]
    assert len(b_runs) == 1
    for run_id in (first, second):
        assert (await get_run(app_client, run_id))["waiting_on"] == [b_runs[0]["id"]]
    await finish(app_client, worker, await claim_one(app_client, worker))
    claimed = (await poll(app_client, worker, 5))["runs"]
    assert sorted(r["run_id"] for r in claimed) == [first, second]
