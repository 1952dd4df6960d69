"""/api/tracking (spec 1) over HTTP on both databases: events create and move external runs, attach to
taskyard's own runs without moving them, lists, the batch endpoint, and Spring-Boot-shaped errors."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from helpers import ALL_TYPES, claim_one, clocked, create_task, finish, get_run, poll, register, trigger

from conftest import app_with, server_settings

EVENT = "/api/tracking/event"


async def send(client: httpx.AsyncClient, run_id: Any, event: str, data: Any = None,
               function: str = "my-custom-function", **extra: Any) -> httpx.Response:
    body = {"runId": run_id, "functionName": function, "eventName": event, **extra}
    if data is not None:
        body["data"] = data
    return await client.post(EVENT, json=body)


async def sent(client: httpx.AsyncClient, run_id: Any, event: str, data: Any = None, **extra: Any) -> None:
    response = await send(client, run_id, event, data, **extra)
    assert response.status_code == 200, response.text
    assert response.content == b""


async def runs(client: httpx.AsyncClient, **params: Any) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/tracking/runs", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list)
    return {r["runId"]: r for r in body}


async def events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/tracking/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def spring(response: httpx.Response, status: int, path: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"timestamp", "status", "error", "message", "path"}, body
    assert body["status"] == status and body["path"] == path and body["message"]
    assert body["timestamp"].endswith("Z")
    return body  # type: ignore[no-any-return]


async def test_first_event_creates_the_run_and_end_succeeds(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        await sent(client, "run-20250729-xyz", "start", timestamp="2026-01-05T11:59:00.123Z")
        run = (await runs(client))["run-20250729-xyz"]
        assert (run["functionName"], run["status"]) == ("my-custom-function", "RUNNING")
        assert run["startTime"] == "2026-01-05T11:59:00.123Z"
        clock.advance(5)
        await sent(client, "run-20250729-xyz", "milestone_1", {"processed_records": 100, "status": "in_progress"},
                   unknownExtra="ignored")
        await sent(client, "run-20250729-xyz", "end", {"status": "success"})
        assert (await runs(client))["run-20250729-xyz"]["status"] == "SUCCESS"
        listed = await events(client, "run-20250729-xyz")
        assert [e["eventName"] for e in listed] == ["start", "milestone_1", "end"]
        assert [e["id"] for e in listed] == sorted(e["id"] for e in listed)
        assert listed[0]["eventData"] == "{}"
        assert listed[2]["eventData"] == '{"status":"success"}'
        assert listed[0]["timestamp"] == "2026-01-05T11:59:00.123Z"
        assert listed[2]["timestamp"] == "2026-01-05T12:00:05.000Z"
        assert {e["runId"] for e in listed} == {"run-20250729-xyz"}
        assert {e["functionName"] for e in listed} == {"my-custom-function"}
        # The run is an ordinary taskyard run of an "external" task, with history, in the scheduler API too.
        detail = await get_run(client, run["id"])
        assert detail["state"] == "completed" and detail["execution_time"] == 64.877
        assert [h["status"] for h in detail["history"]] == ["running", "completed"]
        # A later event is stored but moves nothing.
        await sent(client, "run-20250729-xyz", "error", {"message": "late"})
        assert (await runs(client))["run-20250729-xyz"]["status"] == "SUCCESS"


async def test_error_fails_the_run_with_its_message(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        await sent(client, "run-abc", "start", function="another-function")
        await sent(client, "run-abc", "error", {"message": "disk full"}, function="another-function")
        listed = await runs(client)
        assert listed["run-abc"]["status"] == "FAILURE"
        detail = await get_run(client, listed["run-abc"]["id"])
        assert (detail["state"], detail["error_message"]) == ("failed", "disk full")
        # A second run of the same function reuses its task.
        await sent(client, "run-def", "milestone", function="another-function")
        listed = await runs(client)
        one, two = await get_run(client, listed["run-abc"]["id"]), await get_run(client, listed["run-def"]["id"])
        assert one["task_id"] == two["task_id"]


async def test_events_attach_to_a_taskyard_run_and_leave_its_status(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "etl")
        run_id = (await trigger(client, task["id"]))["run_id"]
        worker = (await register(client))["id"]
        claimed = await claim_one(client, worker)
        assert claimed["run_id"] == run_id
        clock.advance(1)
        # What a task reports with TASKYARD_RUN_ID / TASKYARD_FUNCTION_NAME from its environment.
        await sent(client, str(run_id), "start", function="etl")
        await sent(client, run_id, "step", {"rows": 3}, function="etl")  # a JSON number names it too
        await sent(client, str(run_id), "end", function="etl")
        assert (await get_run(client, run_id))["state"] == "running"
        listed = await runs(client)
        assert listed[str(run_id)]["status"] == "RUNNING" and listed[str(run_id)]["functionName"] == "etl"
        clock.advance(1)
        done = await finish(client, worker, claimed)
        assert done["state"] == "completed"
        assert (await runs(client))[str(run_id)]["status"] == "SUCCESS"
        listed_events = await events(client, str(run_id))
        assert [(e["eventName"], e["id"] is None) for e in listed_events] == [
            ("start", True), ("start", False), ("step", False), ("end", False), ("end", True)]
        assert listed_events[-1]["eventData"] == '{"status":"completed"}'
        assert listed_events[-1]["timestamp"] == "2026-01-05T12:00:02.000Z"
        # The uuid names the same run.
        assert len(await events(client, done["uuid"])) == 5


async def test_lifecycle_events_of_a_failed_taskyard_run(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        task = await create_task(client, "flaky", retry_count=0)
        run_id = (await trigger(client, task["id"]))["run_id"]
        worker = (await register(client))["id"]
        claimed = await claim_one(client, worker)
        await finish(client, worker, claimed, "failed", error_message="boom")
        listed = await events(client, str(run_id))
        assert [e["eventName"] for e in listed] == ["start", "error"]
        assert "boom" in listed[1]["eventData"]
        assert (await runs(client))[str(run_id)]["status"] == "FAILURE"


async def test_runs_list_holds_both_kinds_newest_first_and_pages(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        task = await create_task(client, "ours")
        ours = (await trigger(client, task["id"]))["run_id"]
        await sent(client, "theirs", "start")
        response = await client.get("/api/tracking/runs")
        body = response.json()
        assert [r["runId"] for r in body] == ["theirs", str(ours)]
        assert set(body[0]) == {"id", "runId", "functionName", "startTime", "status"}
        assert body[1]["status"] == "RUNNING"  # queued reads RUNNING in spec 1
        assert [r["runId"] for r in (await client.get("/api/tracking/runs?limit=1&offset=1")).json()] == [str(ours)]
        spring(await client.get("/api/tracking/runs?limit=0"), 400, "/api/tracking/runs")


async def test_batch_stores_many_events_in_one_call(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        batch = [{"runId": f"job-{i % 3}", "functionName": "bulk", "eventName": f"e{i}", "data": {"i": i},
                  "extra": True} for i in range(600)]
        batch.append({"runId": "job-0", "functionName": "bulk", "eventName": "end"})
        response = await client.post("/api/tracking/batch", json={"events": batch})
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 601}
        listed = await runs(client)
        assert {k: v["status"] for k, v in listed.items()} == {"job-0": "SUCCESS", "job-1": "RUNNING",
                                                               "job-2": "RUNNING"}
        job0 = await events(client, "job-0")
        assert len(job0) == 201 and job0[0]["eventName"] == "e0" and job0[-1]["eventName"] == "end"
        # One bad event refuses the whole batch, naming it.
        bad = await client.post("/api/tracking/batch", json={"events": [batch[0], {"runId": "x", "eventName": "e"}]})
        body = spring(bad, 400, "/api/tracking/batch")
        assert "events[1].functionName" in body["message"]
        assert len(await events(client, "job-0")) == 201


async def test_errors_are_spring_shaped(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        body = spring(await client.post(EVENT, json={"functionName": "f", "eventName": "e"}), 400, EVENT)
        assert body["error"] == "Bad Request" and "runId" in body["message"]
        spring(await send(client, "", "e"), 400, EVENT)
        spring(await send(client, "r", "x" * 256), 400, EVENT)
        spring(await send(client, "r", "e", timestamp="yesterday"), 400, EVENT)
        malformed = await client.post(EVENT, content=b"{not json", headers={"content-type": "application/json"})
        spring(malformed, 400, EVENT)
        spring(await client.post(EVENT, json=[1, 2]), 400, EVENT)
        path = "/api/tracking/runs/nope/events"
        body = spring(await client.get(path), 404, path)
        assert body["error"] == "Not Found"
        spring(await client.get("/api/tracking/nowhere"), 404, "/api/tracking/nowhere")
        # The scheduler dialect keeps its own envelope.
        assert (await client.get("/api/runs/999")).json()["success"] is False


async def test_external_runs_are_never_claimed(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        await sent(client, "outside-1", "start", function="outside")
        worker = (await register(client, task_types=ALL_TYPES, max_concurrent_tasks=10))["id"]
        assert (await poll(client, worker, 10))["runs"] == []
        refused = await client.post("/api/workers", json={"hostname": "h", "ip_address": "10.0.0.2", "port": 1,
                                                          "task_types": ["external"]})
        assert refused.status_code == 422
        assert (await runs(client))["outside-1"]["status"] == "RUNNING"


async def test_roles_and_limits_keep_their_statuses_in_the_spring_shape(database_url: str) -> None:
    ctx = app_with(server_settings(database_url, auth=True, max_body_bytes=4096))
    async with ctx as client:
        keys = {role: (await ctx.app.state.core.access.create_key(role, role)).secret
                for role in ("viewer", "worker", "operator")}
        spring(await send(client, "r1", "start"), 401, EVENT)
        denied = await client.post(EVENT, json={"runId": "r1", "functionName": "f", "eventName": "e"},
                                   headers={"Authorization": f"Bearer {keys['viewer']}"})
        assert spring(denied, 403, EVENT)["error"] == "Forbidden"
        for role in ("worker", "operator"):
            ok = await client.post(EVENT, json={"runId": "r1", "functionName": "f", "eventName": role},
                                   headers={"Authorization": f"Bearer {keys[role]}"})
            assert ok.status_code == 200, ok.text
        viewer = {"Authorization": f"Bearer {keys['viewer']}"}
        assert len((await client.get("/api/tracking/runs/r1/events", headers=viewer)).json()) == 2
        big = {"runId": "r1", "functionName": "f", "eventName": "e", "data": {"blob": "x" * 5000}}
        spring(await client.post(EVENT, json=big, headers={"Authorization": f"Bearer {keys['worker']}"}), 413,
               EVENT)


async def test_concurrent_first_events_make_one_run(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        answers = await asyncio.gather(*(send(client, "raced", f"e{i}", function="racer") for i in range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        assert list(await runs(client)) == ["raced"]
        assert len(await events(client, "raced")) == 8


async def test_batch_bodies_are_read_strictly(database_url: str) -> None:
    """The batch body is read by hand (not by a model): each malformed shape is still a 400 naming it, and
    nothing of a refused batch is stored."""
    batch = "/api/tracking/batch"
    good = {"runId": "strict", "functionName": "f", "eventName": "kept"}
    async with clocked(database_url) as (client, _clock):
        for body, named in [
            ({}, "events"),
            ({"events": {"runId": "x"}}, "events"),
            ({"events": [good, "text"]}, "events.1"),
            ({"events": [good, {**good, "timestamp": "yesterday"}]}, "events.1.timestamp"),
            ({"events": [good, {**good, "eventName": " "}]}, "events[1].eventName"),
            ({"events": [good, {**good, "data": {"k": "nul\u0000"}}]}, "NUL"),
            ({"events": [good] * 10_001}, "events"),
        ]:
            refused = await client.post(batch, json=body)
            assert named in spring(refused, 400, batch)["message"], (named, refused.text)
        assert (await client.get("/api/tracking/runs/strict/events")).status_code == 404
        # A NUL written as text ("\\u0000", escaped backslash) is fine; so are a numeric runId and a
        # timestamp given as Unix seconds.
        ok = await client.post(batch, json={"events": [
            {**good, "data": {"path": "C:\\u0000"}},
            {**good, "runId": 4242, "timestamp": 1_700_000_000},
            {**good, "timestamp": "2026-01-02T03:04:05Z"}]})
        assert ok.json() == {"accepted": 3}, ok.text
        stored = await events(client, "strict")
        assert stored[0]["eventData"] == '{"path":"C:\\\\u0000"}'
        assert stored[1]["timestamp"] == "2026-01-02T03:04:05.000Z"
        assert (await events(client, "4242"))[0]["timestamp"] == "2023-11-14T22:13:20.000Z"


async def test_one_batch_takes_events_logs_and_samples(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        task = await create_task(client, "mixed")
        run_id = (await trigger(client, task["id"]))["run_id"]
        body = {"events": [{"runId": run_id, "functionName": "mixed", "eventName": "milestone"}],
                "logs": [{"runId": run_id, "message": "printed", "stream": "stdout", "level": "info"}],
                "samples": [{"runId": str(run_id), "name": "cpu", "value": 12.5, "unit": "percent",
                             "source": "worker"}]}
        response = await client.post("/api/tracking/batch", json=body)
        assert response.json() == {"accepted": 3}, response.text
        assert [line["message"] for line in (await get_run(client, run_id))["logs"]] == ["printed"]
        # Lines of a run that does not exist are a 404, and nothing of the batch is kept.
        missing = await client.post("/api/tracking/batch", json={**body, "logs": [{"runId": "nope", "message": "x"}]})
        assert "nope" in spring(missing, 404, "/api/tracking/batch")["message"]
        bad = await client.post("/api/tracking/batch", json={"samples": [{"runId": run_id, "name": "cpu"}]})
        assert "samples[0].value" in spring(bad, 400, "/api/tracking/batch")["message"]
        assert [e["eventName"] for e in await events(client, str(run_id))] == ["milestone"]
