"""A first pass over the task endpoints on both databases."""

from __future__ import annotations

import httpx


async def test_create_list_show_trigger(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post("/api/tasks", json={
        "name": "data_processing", "task_type": "shell", "executor": "shell", "command": "echo hi",
        "schedule": "0 2 * * *", "priority": "normal"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["success"] is True
    assert body["metadata"]["request_id"] == created.headers["x-request-id"]
    task = body["data"]
    assert task["next_run_at"].endswith("T02:00:00Z")

    listed = (await app_client.get("/api/tasks")).json()["data"]
    assert listed["total"] == 1 and listed["items"][0]["name"] == "data_processing"

    triggered = await app_client.post(f"/api/tasks/{task['id']}/trigger")
    assert triggered.status_code == 200
    assert triggered.json()["data"]["status"] == "pending"

    dup = await app_client.post("/api/tasks", json={"name": "data_processing", "task_type": "shell",
                                                   "command": "echo"})
    assert dup.status_code == 409
    assert dup.json()["error"]["code"] == "RESOURCE_CONFLICT"
