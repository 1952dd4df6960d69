"""/api/system (health, stats, metrics, logs) and what every response shares: the envelope, request ids,
404s for unknown routes, and the OpenAPI document."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
import pytest
from helpers import (
    REQUEST_ID,
    claim_one,
    clocked,
    create_task,
    data,
    error,
    list_items,
    register,
    run_task,
    trigger,
)
from prometheus_client.parser import text_string_to_metric_families


async def test_health(app_client: httpx.AsyncClient) -> None:
    await register(app_client)
    task = await create_task(app_client, "queued")
    await trigger(app_client, task["id"])
    await trigger(app_client, task["id"])
    health = data(await app_client.get("/api/system/health"))
    assert (health["status"], health["version"]) == ("healthy", "1.0.0")
    assert datetime.fromisoformat(health["timestamp"].replace("Z", "+00:00"))
    parts = health["components"]
    assert set(parts) >= {"database", "message_queue", "scheduler", "api"}
    assert all(part["status"] == "healthy" for part in parts.values())
    for name in ("database", "message_queue", "api"):
        assert isinstance(parts[name]["response_time"], float) and parts[name]["response_time"] >= 0, name
    pool = parts["database"]["connection_pool"]
    assert set(pool) == {"total", "active", "idle"} and pool["total"] == pool["active"] + pool["idle"]
    assert parts["message_queue"]["queue_size"] == 2
    assert (parts["scheduler"]["active_workers"], parts["scheduler"]["pending_tasks"]) == (1, 2)
    assert parts["api"]["request_rate"] > 0


async def test_stats_match_the_data(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        good = await create_task(client, "good", retry_count=0)
        bad = await create_task(client, "bad", retry_count=0)
        idle = await create_task(client, "idle")
        data(await client.post(f"/api/tasks/{idle['id']}/pause"))
        w1 = (await register(client, "w1"))["id"]
        w2 = (await register(client, "w2"))["id"]
        data(await client.put(f"/api/workers/{w2}", json={"status": "draining"}))
        data(await client.post(f"/api/workers/{w1}/heartbeat", json={"load_average": 0.5}))
        aborted = (await trigger(client, bad["id"]))["run_id"]
        data(await client.post(f"/api/runs/{aborted}/abort"))
        await run_task(client, good["id"], w1, clock=clock, seconds=2)
        await run_task(client, good["id"], w1, clock=clock, seconds=4)
        await run_task(client, good["id"], w1, clock=clock, seconds=6)
        await run_task(client, bad["id"], w1, "failed", clock=clock, seconds=1)
        running = (await trigger(client, good["id"]))["run_id"]
        assert (await claim_one(client, w1))["run_id"] == running
        await trigger(client, bad["id"])

        stats = data(await client.get("/api/system/stats"))
        assert stats["tasks"] == {"total": 3, "active": 2, "paused": 1, "completed": 1, "failed": 1}
        assert stats["task_runs"] == {"total": 7, "pending": 1, "running": 1, "completed": 3, "failed": 1,
                                      "aborted": 1}
        assert stats["workers"] == {"total": 2, "active": 1, "offline": 0, "draining": 1, "average_load": 0.5}
        perf = stats["performance"]
        assert perf["average_execution_time"] == 4.0
        assert perf["success_rate"] == 60.0  # 3 of 5 finished runs
        assert perf["tasks_per_minute"] == 1.0  # 5 finished within the last 5 minutes
        assert perf["system_uptime"]
        usage = stats["resource_usage"]
        assert set(usage) == {"cpu_usage", "memory_usage", "disk_usage", "network_io"}
        assert usage["memory_usage"] > 0 and set(usage["network_io"]) == {"bytes_in", "bytes_out"}
        clock.advance(3600)  # an hour later nothing finished recently
        assert data(await client.get("/api/system/stats"))["performance"]["tasks_per_minute"] == 0


async def test_stats_on_an_empty_system(app_client: httpx.AsyncClient) -> None:
    stats = data(await app_client.get("/api/system/stats"))
    assert stats["tasks"]["total"] == 0 and stats["task_runs"]["total"] == 0
    assert stats["performance"]["tasks_per_minute"] == 0
    assert stats["performance"]["success_rate"] is None


async def test_metrics_in_prometheus_text(database_url: str) -> None:
    async with clocked(database_url) as (client, clock):
        task = await create_task(client, "timed", retry_count=0)
        await create_task(client, "other")
        paused = await create_task(client, "paused")
        data(await client.post(f"/api/tasks/{paused['id']}/pause"))
        worker = (await register(client))["id"]
        await run_task(client, task["id"], worker, clock=clock, seconds=0.3)
        await run_task(client, task["id"], worker, clock=clock, seconds=2)
        await run_task(client, task["id"], worker, "failed", clock=clock, seconds=20)
        await trigger(client, task["id"])

        response = await client.get("/api/system/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        text = response.text
        for name in ("scheduler_tasks_total", "scheduler_tasks_active", "scheduler_workers_total",
                     "scheduler_task_execution_duration_seconds_bucket"):
            assert name in text, name
        samples = {}
        buckets = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "scheduler_task_execution_duration_seconds_bucket":
                    buckets[sample.labels["le"]] = sample.value
                elif not sample.labels:
                    samples[sample.name] = sample.value
        assert samples["scheduler_tasks_total"] == 3
        assert samples["scheduler_tasks_active"] == 2
        assert samples["scheduler_workers_total"] == 1
        assert samples["scheduler_queue_depth"] == 1
        assert (buckets["0.1"], buckets["0.5"], buckets["5.0"], buckets["10.0"], buckets["+Inf"]) == (
            0, 1, 2, 2, 3)
        assert samples["scheduler_task_execution_duration_seconds_count"] == 3
        assert samples["scheduler_task_execution_duration_seconds_sum"] == pytest.approx(22.3)


def _record(name: str, level: int, message: str, at: datetime, **ctx: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    record.created = at.timestamp()
    if ctx:
        record.ctx = ctx
    return record


async def test_logs_filter_and_page(app_client: httpx.AsyncClient) -> None:
    day = datetime(2020, 3, 1, tzinfo=UTC)
    # Loggers made here (never disabled by a logging config) whose records reach the server's buffer.
    records = [
        ("taskyard.scheduler.probe", logging.DEBUG, "tick", 0),
        ("taskyard.scheduler.probe", logging.INFO, "cron fired", 1),
        ("taskyard.api.probe", logging.WARNING, "slow request", 2),
        ("taskyard.scheduler.probe", logging.ERROR, "schedule broken", 3),
        ("taskyard.api.probe", logging.INFO, "served", 4),
    ]
    for name, level, message, hour in records:
        logging.getLogger(name).handle(_record(name, level, message, day.replace(hour=hour), task_id=hour))
    window = {"start_time": "2020-03-01T00:00:00Z", "end_time": "2020-03-01T23:59:59Z"}

    async def messages(**params: object) -> list[str]:
        page = await list_items(app_client, "/api/system/logs", **window, **params)
        return [item["message"] for item in page["items"]]

    assert await messages() == ["served", "schedule broken", "slow request", "cron fired", "tick"]  # newest first
    assert await messages(level="info") == ["served", "schedule broken", "slow request", "cron fired"]
    assert await messages(level="warn") == ["schedule broken", "slow request"]
    assert await messages(level="error") == ["schedule broken"]
    assert await messages(level="ERROR") == ["schedule broken"]
    assert await messages(service="api") == ["served", "slow request"]
    assert await messages(service="scheduler", level="info") == ["schedule broken", "cron fired"]
    assert await messages(service="nobody") == []
    narrow = await list_items(app_client, "/api/system/logs", start_time="2020-03-01T01:00:00Z",
                              end_time="2020-03-01T03:00:00+00:00")
    assert [item["message"] for item in narrow["items"]] == ["schedule broken", "slow request", "cron fired"]
    naive = await list_items(app_client, "/api/system/logs", start_time="2020-03-01T04:00:00",
                             end_time="2020-03-01T05:00:00")
    assert [item["message"] for item in naive["items"]] == ["served"]
    page = await list_items(app_client, "/api/system/logs", **window, page=2, size=2)
    assert (page["total"], page["page"], page["size"], page["total_pages"]) == (5, 2, 2, 3)
    assert [item["message"] for item in page["items"]] == ["slow request", "cron fired"]
    item = page["items"][0]
    assert item == {"timestamp": "2020-03-01T02:00:00Z", "level": "warn", "service": "api",
                    "logger": "taskyard.api.probe", "message": "slow request", "metadata": {"task_id": 2}}
    default = await list_items(app_client, "/api/system/logs")
    assert default["size"] == 50 and default["page"] == 1

    error(await app_client.get("/api/system/logs", params={"level": "loud"}), 422, "VALIDATION_ERROR", "level")
    error(await app_client.get("/api/system/logs", params={"start_time": "last tuesday"}), 422,
          "VALIDATION_ERROR", "start_time")
    error(await app_client.get("/api/system/logs", params={"size": 5000}), 422, "VALIDATION_ERROR", "size")
    error(await app_client.get("/api/system/logs", params={"page": 0}), 422, "VALIDATION_ERROR", "page")


# -- the envelope and routing -------------------------------------------------------------------------


async def test_request_ids(app_client: httpx.AsyncClient) -> None:
    fresh = await app_client.get("/api/tasks")
    generated = fresh.headers["x-request-id"]
    assert REQUEST_ID.match(generated) and data(fresh)
    assert (await app_client.get("/api/tasks")).headers["x-request-id"] != generated

    mine = await app_client.get("/api/tasks", headers={"X-Request-ID": "trace-42.a:b"})
    assert mine.headers["x-request-id"] == "trace-42.a:b"
    assert mine.json()["metadata"]["request_id"] == "trace-42.a:b"
    failed = await app_client.get("/api/tasks/999", headers={"X-Request-ID": "trace-43"})
    assert error(failed, 404, "RESOURCE_NOT_FOUND") and failed.headers["x-request-id"] == "trace-43"
    assert failed.json()["metadata"]["request_id"] == "trace-43"
    for unsafe in ("has spaces", "x" * 129, "semi;colon", "<script>"):
        replaced = await app_client.get("/api/tasks", headers={"X-Request-ID": unsafe})
        assert replaced.headers["x-request-id"] != unsafe
        assert data(replaced) is not None


async def test_metadata_of_every_kind_of_answer(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post("/api/tasks", json={"name": "m", "task_type": "shell", "command": "x"})
    meta = created.json()["metadata"]
    assert meta["version"] == "1.0.0" and meta["timestamp"].endswith("Z")
    assert data(created, 201)
    invalid = await app_client.post("/api/tasks", json={"name": "m"})
    assert error(invalid, 422, "VALIDATION_ERROR")["details"]["field"] == "task_type"


async def test_unknown_routes_answer_in_the_envelope(app_client: httpx.AsyncClient) -> None:
    for method, path, status, code in [
        ("GET", "/api/nothing-here", 404, "RESOURCE_NOT_FOUND"),
        ("GET", "/api/tasks/1/nothing", 404, "RESOURCE_NOT_FOUND"),
        ("GET", "/not-the-api", 404, "RESOURCE_NOT_FOUND"),
        ("POST", "/api/system/health", 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/api/runs", 405, "METHOD_NOT_ALLOWED"),
    ]:
        err = error(await app_client.request(method, path, headers={"X-Request-ID": "route-check"}), status, code)
        assert path in err["message"] or status == 405


async def test_openapi_lists_every_spec_path(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/api/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/api/tasks": {"get", "post"},
        "/api/tasks/{task_id}": {"get", "put", "delete"},
        "/api/tasks/{task_id}/trigger": {"post"},
        "/api/tasks/{task_id}/pause": {"post"},
        "/api/tasks/{task_id}/resume": {"post"},
        "/api/runs": {"get"},
        "/api/runs/{run_id}": {"get"},
        "/api/runs/{run_id}/restart": {"post"},
        "/api/runs/{run_id}/abort": {"post"},
        "/api/workers": {"get", "post"},
        "/api/workers/{worker_id}": {"get", "put", "delete"},
        "/api/workers/{worker_id}/heartbeat": {"post"},
        "/api/system/health": {"get"},
        "/api/system/stats": {"get"},
        "/api/system/metrics": {"get"},
        "/api/system/logs": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    assert (await app_client.get("/api/docs")).status_code == 200
