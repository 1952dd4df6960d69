"""Bad input never gets a 500: every malformed, mistyped, out-of-range or unknown value is refused with
the error envelope, the right status and code, and (where there is one) the field it concerns.

One app and database per backend serve the whole module (the cases only read, or are refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from helpers import claim_one, create_task, data, error, list_items, register, shared_database, trigger

from conftest import app_with, server_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_ID = 2**63 - 1


@dataclass
class Seeded:
    client: httpx.AsyncClient
    task: int
    run: int
    worker: str

    def fill(self, value: Any) -> Any:
        """Put the seeded ids where a case says {task}, {run} or {worker}."""
        if isinstance(value, str):
            if value in ("{task}", "{run}"):
                return self.task if value == "{task}" else self.run
            return value.format(task=self.task, run=self.run, worker=self.worker)
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              postgres_template: str | None) -> AsyncIterator[Seeded]:
    with shared_database(request.param, tmp_path_factory.mktemp("bad"), postgres_template) as url:
        async with app_with(server_settings(url)) as client:
            task = await create_task(client, "seed")
            worker = (await register(client, "seed-host"))["id"]
            run = (await trigger(client, task["id"]))["run_id"]
            await claim_one(client, worker)
            yield Seeded(client, task["id"], run, worker)


TASK = {"name": "bad-input", "task_type": "shell", "command": "echo"}
WORKER = {"hostname": "h", "ip_address": "10.0.0.2", "port": 80, "task_types": ["shell"]}
REPORT = {"run_id": "{run}", "attempt": 1}

# -- bodies that are not a JSON object: 400 -----------------------------------------------------------

NOT_AN_OBJECT = [
    pytest.param("POST", "/api/tasks", b'{"name": "x",', id="create-truncated"),
    pytest.param("POST", "/api/tasks", b"{'name': 'x'}", id="create-single-quotes"),
    pytest.param("POST", "/api/tasks", b"\xff\xfe\x00\x01", id="create-not-utf8"),
    pytest.param("POST", "/api/tasks", b'[{"name": "x"}]', id="create-array"),
    pytest.param("POST", "/api/tasks", b'"a string"', id="create-string"),
    pytest.param("POST", "/api/tasks", b"42", id="create-number"),
    pytest.param("POST", "/api/tasks", b"[" * 100_000, id="create-deeply-nested"),
    pytest.param("PUT", "/api/tasks/{task}", b'{"name": }', id="update-malformed"),
    pytest.param("PUT", "/api/tasks/{task}", b"[]", id="update-array"),
    pytest.param("POST", "/api/tasks/{task}/trigger", b"{oops}", id="trigger-malformed"),
    pytest.param("POST", "/api/tasks/{task}/trigger", b"[]", id="trigger-array"),
    pytest.param("POST", "/api/tasks/{task}/trigger", b'"x"', id="trigger-string"),
    pytest.param("POST", "/api/workers", b"{", id="register-malformed"),
    pytest.param("POST", "/api/workers", b"[]", id="register-array"),
    pytest.param("PUT", "/api/workers/{worker}", b"nope", id="worker-update-malformed"),
    pytest.param("POST", "/api/workers/{worker}/heartbeat", b'{"cpu_usage": }', id="heartbeat-malformed"),
    pytest.param("POST", "/api/workers/{worker}/heartbeat", b"[1, 2]", id="heartbeat-array"),
    pytest.param("POST", "/api/workers/{worker}/poll", b"{,}", id="poll-malformed"),
    pytest.param("POST", "/api/workers/{worker}/report", b"[]", id="report-array"),
]


@pytest.mark.parametrize(("method", "path", "content"), NOT_AN_OBJECT)
async def test_not_a_json_object(api: Seeded, method: str, path: str, content: bytes) -> None:
    response = await api.client.request(method, api.fill(path), content=content,
                                        headers={"Content-Type": "application/json"})
    error(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/tasks"), ("PUT", "/api/tasks/{task}"), ("POST", "/api/workers"),
    ("POST", "/api/workers/{worker}/report"),
])
async def test_missing_body(api: Seeded, method: str, path: str) -> None:
    error(await api.client.request(method, api.fill(path)), 400, "VALIDATION_ERROR")
    error(await api.client.request(method, api.fill(path), content=b"null",
                                   headers={"Content-Type": "application/json"}), 400, "VALIDATION_ERROR")


# -- JSON bodies with wrong, unknown or out-of-range values: 422 naming the field ---------------------

BODIES = [
    # create a task
    ("POST", "/api/tasks", {**TASK, "retry_count": "3"}, "retry_count"),
    ("POST", "/api/tasks", {**TASK, "retry_count": True}, "retry_count"),
    ("POST", "/api/tasks", {**TASK, "retry_count": 1.5}, "retry_count"),
    ("POST", "/api/tasks", {**TASK, "retry_count": -1}, "retry_count"),
    ("POST", "/api/tasks", {**TASK, "retry_count": 101}, "retry_count"),
    ("POST", "/api/tasks", {**TASK, "retry_count": 2**70}, "retry_count"),
    ("POST", "/api/tasks", {**TASK, "timeout_seconds": 0}, "timeout_seconds"),
    ("POST", "/api/tasks", {**TASK, "timeout_seconds": 10**12}, "timeout_seconds"),
    ("POST", "/api/tasks", {**TASK, "timeout_seconds": "60"}, "timeout_seconds"),
    ("POST", "/api/tasks", {**TASK, "name": 123}, "name"),
    ("POST", "/api/tasks", {**TASK, "name": ""}, "name"),
    ("POST", "/api/tasks", {**TASK, "name": "   "}, "name"),
    ("POST", "/api/tasks", {**TASK, "name": "x" * 256}, "name"),
    ("POST", "/api/tasks", {**TASK, "name": None}, "name"),
    ("POST", "/api/tasks", {"task_type": "shell", "command": "x"}, "name"),
    ("POST", "/api/tasks", {"name": "x", "task_type": "shell"}, "command"),
    ("POST", "/api/tasks", {**TASK, "command": ""}, "command"),
    ("POST", "/api/tasks", {**TASK, "command": " \t "}, "command"),
    ("POST", "/api/tasks", {**TASK, "task_type": "cobol"}, "task_type"),
    ("POST", "/api/tasks", {**TASK, "task_type": ""}, "task_type"),
    ("POST", "/api/tasks", {**TASK, "priority": "urgent"}, "priority"),
    ("POST", "/api/tasks", {**TASK, "priority": "HIGH"}, "priority"),
    ("POST", "/api/tasks", {**TASK, "priority": 3}, "priority"),
    ("POST", "/api/tasks", {**TASK, "catchup": "sometimes"}, "catchup"),
    ("POST", "/api/tasks", {**TASK, "schedule": "not a cron"}, "schedule"),
    ("POST", "/api/tasks", {**TASK, "schedule": "61 * * * *"}, "schedule"),
    ("POST", "/api/tasks", {**TASK, "schedule": "* * * *"}, "schedule"),
    ("POST", "/api/tasks", {**TASK, "schedule": "0 0 30 2 *"}, "schedule"),
    ("POST", "/api/tasks", {**TASK, "schedule": "H * * * *"}, "schedule"),
    ("POST", "/api/tasks", {**TASK, "schedule": 5}, "schedule"),
    ("POST", "/api/tasks", {**TASK, "schedule": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ("POST", "/api/tasks", {**TASK, "timezone": "Mars/Olympus"}, "timezone"),
    ("POST", "/api/tasks", {**TASK, "schedule": "0 * * * *", "timezone": ""}, "timezone"),
    ("POST", "/api/tasks", {**TASK, "timezone": "../../etc/passwd"}, "timezone"),
    ("POST", "/api/tasks", {**TASK, "arguments": "a b"}, "arguments"),
    ("POST", "/api/tasks", {**TASK, "arguments": [1]}, "arguments.0"),
    ("POST", "/api/tasks", {**TASK, "tags": "x"}, "tags"),
    ("POST", "/api/tasks", {**TASK, "tags": [1]}, "tags.0"),
    ("POST", "/api/tasks", {**TASK, "metadata": []}, "metadata"),
    ("POST", "/api/tasks", {**TASK, "dependencies": "seed"}, "dependencies"),
    ("POST", "/api/tasks", {**TASK, "dependencies": [1.5]}, "dependencies.0"),
    ("POST", "/api/tasks", {**TASK, "dependencies": [2**70]}, "dependencies.0"),
    ("POST", "/api/tasks", {**TASK, "dependencies": ["no-such-task"]}, "dependencies"),
    ("POST", "/api/tasks", {**TASK, "colour": "red"}, "colour"),
    ("POST", "/api/tasks", {**TASK, "status": "paused"}, "status"),
    ("POST", "/api/tasks", {**TASK, "id": 5}, "id"),
    # update a task
    ("PUT", "/api/tasks/{task}", {"retry_count": "x"}, "retry_count"),
    ("PUT", "/api/tasks/{task}", {"retry_count": -3}, "retry_count"),
    ("PUT", "/api/tasks/{task}", {"name": ""}, "name"),
    ("PUT", "/api/tasks/{task}", {"name": 7}, "name"),
    ("PUT", "/api/tasks/{task}", {"priority": "urgent"}, "priority"),
    ("PUT", "/api/tasks/{task}", {"catchup": "never"}, "catchup"),
    ("PUT", "/api/tasks/{task}", {"schedule": "every day"}, "schedule"),
    ("PUT", "/api/tasks/{task}", {"timezone": "Nowhere/City"}, "timezone"),
    ("PUT", "/api/tasks/{task}", {"task_type": "cobol"}, "task_type"),
    ("PUT", "/api/tasks/{task}", {"command": ""}, "command"),
    ("PUT", "/api/tasks/{task}", {"status": "paused"}, "status"),
    ("PUT", "/api/tasks/{task}", {"dependencies": ["{task}"]}, "dependencies"),
    # trigger
    ("POST", "/api/tasks/{task}/trigger", {"parameters": "x"}, "parameters"),
    ("POST", "/api/tasks/{task}/trigger", {"parameters": [1]}, "parameters"),
    ("POST", "/api/tasks/{task}/trigger", {"priority": "urgent"}, "priority"),
    ("POST", "/api/tasks/{task}/trigger", {"priority": 1}, "priority"),
    ("POST", "/api/tasks/{task}/trigger", {"timeout_seconds": "60"}, "timeout_seconds"),
    ("POST", "/api/tasks/{task}/trigger", {"timeout_seconds": -5}, "timeout_seconds"),
    ("POST", "/api/tasks/{task}/trigger", {"timeout_seconds": 10**9}, "timeout_seconds"),
    ("POST", "/api/tasks/{task}/trigger", {"params": {}}, "params"),
    # register a worker
    ("POST", "/api/workers", {**WORKER, "port": "80"}, "port"),
    ("POST", "/api/workers", {**WORKER, "port": 70000}, "port"),
    ("POST", "/api/workers", {**WORKER, "port": -1}, "port"),
    ("POST", "/api/workers", {**WORKER, "task_types": []}, "task_types"),
    ("POST", "/api/workers", {**WORKER, "task_types": ["cobol"]}, "task_types"),
    ("POST", "/api/workers", {**WORKER, "task_types": "shell"}, "task_types"),
    ("POST", "/api/workers", {**WORKER, "max_concurrent_tasks": 0}, "max_concurrent_tasks"),
    ("POST", "/api/workers", {**WORKER, "max_concurrent_tasks": "5"}, "max_concurrent_tasks"),
    ("POST", "/api/workers", {**WORKER, "max_concurrent_tasks": 10**6}, "max_concurrent_tasks"),
    ("POST", "/api/workers", {**WORKER, "hostname": ""}, "hostname"),
    ("POST", "/api/workers", {k: v for k, v in WORKER.items() if k != "hostname"}, "hostname"),
    ("POST", "/api/workers", {k: v for k, v in WORKER.items() if k != "ip_address"}, "ip_address"),
    ("POST", "/api/workers", {**WORKER, "id": "has space"}, "id"),
    ("POST", "/api/workers", {**WORKER, "id": ""}, "id"),
    ("POST", "/api/workers", {**WORKER, "metadata": "x"}, "metadata"),
    ("POST", "/api/workers", {**WORKER, "colour": 1}, "colour"),
    # update a worker
    ("PUT", "/api/workers/{worker}", {"status": "sleeping"}, "status"),
    ("PUT", "/api/workers/{worker}", {"status": 1}, "status"),
    ("PUT", "/api/workers/{worker}", {"max_concurrent_tasks": 0}, "max_concurrent_tasks"),
    ("PUT", "/api/workers/{worker}", {"task_types": []}, "task_types"),
    ("PUT", "/api/workers/{worker}", {"task_types": ["cobol"]}, "task_types"),
    ("PUT", "/api/workers/{worker}", {"hostname": "renamed"}, "hostname"),
    # heartbeat
    ("POST", "/api/workers/{worker}/heartbeat", {"cpu_usage": "high"}, "cpu_usage"),
    ("POST", "/api/workers/{worker}/heartbeat", {"cpu_usage": -1}, "cpu_usage"),
    ("POST", "/api/workers/{worker}/heartbeat", {"memory_usage": -1}, "memory_usage"),
    ("POST", "/api/workers/{worker}/heartbeat", {"memory_usage": "1GB"}, "memory_usage"),
    ("POST", "/api/workers/{worker}/heartbeat", {"current_task_count": -1}, "current_task_count"),
    ("POST", "/api/workers/{worker}/heartbeat", {"current_tasks": ["a"]}, "current_tasks.0"),
    ("POST", "/api/workers/{worker}/heartbeat", {"current_tasks": 1}, "current_tasks"),
    ("POST", "/api/workers/{worker}/heartbeat", {"uptime": 5}, "uptime"),
    # poll
    ("POST", "/api/workers/{worker}/poll", {"capacity": -1}, "capacity"),
    ("POST", "/api/workers/{worker}/poll", {"capacity": "1"}, "capacity"),
    ("POST", "/api/workers/{worker}/poll", {"capacity": 1001}, "capacity"),
    ("POST", "/api/workers/{worker}/poll", {"wait": 61}, "wait"),
    ("POST", "/api/workers/{worker}/poll", {"wait": -1}, "wait"),
    ("POST", "/api/workers/{worker}/poll", {"wait": "soon"}, "wait"),
    ("POST", "/api/workers/{worker}/poll", {"running": [1.5]}, "running.0"),
    ("POST", "/api/workers/{worker}/poll", {"greedy": True}, "greedy"),
    # report
    ("POST", "/api/workers/{worker}/report", {}, "reports"),
    ("POST", "/api/workers/{worker}/report", {"reports": []}, "reports"),
    ("POST", "/api/workers/{worker}/report", {"reports": "x"}, "reports"),
    ("POST", "/api/workers/{worker}/report", {"reports": [{"attempt": 1}]}, "reports.0.run_id"),
    ("POST", "/api/workers/{worker}/report", {"reports": [{**REPORT, "run_id": "1"}]}, "reports.0.run_id"),
    ("POST", "/api/workers/{worker}/report", {"reports": [{**REPORT, "attempt": 0}]}, "reports.0.attempt"),
    ("POST", "/api/workers/{worker}/report", {"reports": [{**REPORT, "outcome": "exploded"}]},
     "reports.0.outcome"),
    # logs and samples go through /api/tracking/batch now; a report that still carries them is refused
    ("POST", "/api/workers/{worker}/report", {"reports": [{**REPORT, "logs": []}]}, "reports.0.logs"),
    ("POST", "/api/workers/{worker}/report", {"reports": [{**REPORT, "colour": 1}]}, "reports.0.colour"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BODIES)
async def test_bad_body_values(api: Seeded, method: str, path: str, body: Any, field: str) -> None:
    response = await api.client.request(method, api.fill(path), json=api.fill(body))
    err = error(response, 422, "VALIDATION_ERROR", field)
    assert err["details"]["rule"]


# -- values databases cannot store: NUL characters, lone surrogates, non-finite and huge numbers -----

UNSTORABLE = [
    ("POST", "/api/tasks", '{"name": "a\\u0000b", "task_type": "shell", "command": "x"}', "name"),
    ("POST", "/api/tasks", '{"name": "a\\ud800b", "task_type": "shell", "command": "x"}', "name"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "description": "\\u0000"}',
     "description"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x\\u0000"}', "command"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "tags": ["\\u0000"]}', "tags"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "metadata": {"k": "\\u0000"}}',
     "metadata"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "metadata": {"\\u0000": 1}}',
     "metadata"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "metadata": {"k": NaN}}',
     "metadata"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "metadata": {"k": [Infinity]}}',
     "metadata"),
    ("POST", "/api/tasks", '{"name": "n", "task_type": "shell", "command": "x", "metadata": {"k": '
     + str(10**30) + "}}", "metadata"),
    ("POST", "/api/tasks/{task}/trigger", '{"parameters": {"x": "\\u0000"}}', "parameters"),
    ("POST", "/api/tasks/{task}/trigger", '{"parameters": {"x": ' + str(2**64) + "}}", "parameters"),
    ("POST", "/api/workers", '{"hostname": "h\\u0000", "ip_address": "1", "port": 1, "task_types": ["shell"]}',
     "hostname"),
    ("POST", "/api/workers", '{"hostname": "h", "ip_address": "1", "port": 1, "task_types": ["shell"], '
     '"metadata": {"n": ' + str(10**30) + "}}", "metadata"),
    ("POST", "/api/workers/{worker}/heartbeat", '{"memory_usage": ' + str(2**70) + "}", "memory_usage"),
    ("POST", "/api/workers/{worker}/heartbeat", '{"current_task_count": ' + str(2**40) + "}",
     "current_task_count"),
    ("POST", "/api/workers/{worker}/heartbeat", '{"load_average": NaN}', "load_average"),
    ("POST", "/api/workers/{worker}/heartbeat", '{"cpu_usage": Infinity}', "cpu_usage"),
    ("POST", "/api/workers/{worker}/heartbeat", '{"current_tasks": [' + str(2**70) + "]}", "current_tasks"),
    ("POST", "/api/workers/{worker}/heartbeat", '{"metadata": {"k": "\\u0000"}}', "metadata"),
    ("POST", "/api/workers/{worker}/poll", '{"wait": 0, "running": [' + str(2**70) + "]}", "running"),
    ("POST", "/api/workers/{worker}/report", '{"reports": [{"run_id": ' + str(2**70) + ', "attempt": 1}]}',
     "reports.0.run_id"),
    ("POST", "/api/workers/{worker}/report", '{"reports": [{"run_id": {run}, "attempt": 1, "exit_code": '
     + str(2**40) + "}]}", "reports.0.exit_code"),
]


@pytest.mark.parametrize(("method", "path", "raw", "field"), UNSTORABLE)
async def test_unstorable_values(api: Seeded, method: str, path: str, raw: str, field: str) -> None:
    content = raw.replace("{run}", str(api.run)).encode()
    response = await api.client.request(method, api.fill(path), content=content,
                                        headers={"Content-Type": "application/json"})
    error(response, 422, "VALIDATION_ERROR", field)


# -- query strings ------------------------------------------------------------------------------------

QUERIES = [
    ("/api/tasks", {"page": 0}, "page"),
    ("/api/tasks", {"page": -1}, "page"),
    ("/api/tasks", {"page": "abc"}, "page"),
    ("/api/tasks", {"page": "1.5"}, "page"),
    ("/api/tasks", {"page": 10**7}, "page"),
    ("/api/tasks", {"page": 2**64}, "page"),
    ("/api/tasks", {"page": ""}, "page"),
    ("/api/tasks", {"size": 0}, "size"),
    ("/api/tasks", {"size": -5}, "size"),
    ("/api/tasks", {"size": 10000}, "size"),
    ("/api/tasks", {"size": 501}, "size"),
    ("/api/tasks", {"size": 10**20}, "size"),
    ("/api/tasks", {"size": "many"}, "size"),
    ("/api/tasks", {"sort": "bogus"}, "sort"),
    ("/api/tasks", {"sort": "x" * 100}, "sort"),
    ("/api/tasks", {"order": "up"}, "order"),
    ("/api/tasks", {"status": "deleted"}, "status"),
    ("/api/tasks", {"priority": "urgent"}, "priority"),
    ("/api/tasks", {"task_type": "cobol"}, "task_type"),
    ("/api/tasks", {"search": "x" * 300}, "search"),
    ("/api/runs", {"page": 0}, "page"),
    ("/api/runs", {"size": 10000}, "size"),
    ("/api/runs", {"task_id": "abc"}, "task_id"),
    ("/api/runs", {"task_id": 0}, "task_id"),
    ("/api/runs", {"task_id": 2**63}, "task_id"),
    ("/api/runs", {"status": "exploded"}, "status"),
    ("/api/runs", {"start_date": "2026-13-01"}, "start_date"),
    ("/api/runs", {"start_date": "0"}, "start_date"),
    ("/api/runs", {"end_date": "tomorrow"}, "end_date"),
    ("/api/runs", {"start_date": "2026-01-02", "end_date": "2026-01-01"}, "end_date"),
    ("/api/runs", {"sort": "bogus"}, "sort"),
    ("/api/runs", {"order": "up"}, "order"),
    ("/api/workers", {"size": 10000}, "size"),
    ("/api/workers", {"page": "abc"}, "page"),
    ("/api/workers", {"status": "sleeping"}, "status"),
    ("/api/workers", {"task_type": "cobol"}, "task_type"),
    ("/api/workers", {"sort": "bogus"}, "sort"),
    ("/api/runs/{run}/logs", {"after": -1}, "after"),
    ("/api/runs/{run}/logs", {"after": "abc"}, "after"),
    ("/api/runs/{run}/logs", {"after": 2**63}, "after"),
    ("/api/runs/{run}/logs", {"limit": 0}, "limit"),
    ("/api/runs/{run}/logs", {"limit": 10001}, "limit"),
    ("/api/system/logs", {"level": "loud"}, "level"),
    ("/api/system/logs", {"start_time": "yesterday"}, "start_time"),
    ("/api/system/logs", {"end_time": "2020-13-01T00:00:00Z"}, "end_time"),
    ("/api/system/logs", {"page": 0}, "page"),
    ("/api/system/logs", {"size": 0}, "size"),
    ("/api/system/logs", {"size": 1001}, "size"),
]


@pytest.mark.parametrize(("path", "params", "field"), QUERIES)
async def test_bad_query_values(api: Seeded, path: str, params: dict[str, Any], field: str) -> None:
    error(await api.client.get(api.fill(path), params=params), 422, "VALIDATION_ERROR", field)


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/api/tasks", {"search": "a\x00b"}, "search"),
    ("/api/runs", {"worker_id": "a\x00b"}, "worker_id"),
    ("/api/workers", {"hostname": "a\x00b"}, "hostname"),
    ("/api/workers/a%00b", {}, "worker_id"),
])
async def test_nul_in_query_or_path(api: Seeded, path: str, params: dict[str, Any], field: str) -> None:
    """PostgreSQL text cannot hold NUL: it is refused before it reaches a query."""
    error(await api.client.get(path, params=params), 422, "VALIDATION_ERROR", field)


# -- ids in the path ----------------------------------------------------------------------------------

TASK_ROUTES = [("GET", "/api/tasks/{id}"), ("PUT", "/api/tasks/{id}"), ("DELETE", "/api/tasks/{id}"),
               ("POST", "/api/tasks/{id}/trigger"), ("POST", "/api/tasks/{id}/pause"),
               ("POST", "/api/tasks/{id}/resume")]
RUN_ROUTES = [("GET", "/api/runs/{id}"), ("GET", "/api/runs/{id}/logs"), ("POST", "/api/runs/{id}/restart"),
              ("POST", "/api/runs/{id}/abort")]
NOT_IDS = ["abc", "1.5", "0", "-1", "1e3", str(2**63), "99999999999999999999999"]


@pytest.mark.parametrize("bad_id", NOT_IDS)
@pytest.mark.parametrize(("method", "path"), TASK_ROUTES + RUN_ROUTES)
async def test_ids_that_are_not_ids(api: Seeded, method: str, path: str, bad_id: str) -> None:
    body = {} if method in ("PUT", "POST") else None
    response = await api.client.request(method, path.replace("{id}", bad_id), json=body)
    field = "task_id" if path.startswith("/api/tasks") else "run_id"
    error(response, 422, "VALIDATION_ERROR", field)


@pytest.mark.parametrize("missing_id", ["424242", str(MAX_ID)])
@pytest.mark.parametrize(("method", "path"), TASK_ROUTES + RUN_ROUTES)
async def test_ids_that_do_not_exist(api: Seeded, method: str, path: str, missing_id: str) -> None:
    body = {} if method in ("PUT", "POST") else None
    response = await api.client.request(method, path.replace("{id}", missing_id), json=body)
    error(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/workers/ghost", None),
    ("PUT", "/api/workers/ghost", {"status": "active"}),
    ("DELETE", "/api/workers/ghost", None),
    ("POST", "/api/workers/ghost/heartbeat", {}),
    ("POST", "/api/workers/ghost/poll", {"wait": 0}),
    ("POST", "/api/workers/ghost/report", {"reports": [{"run_id": 1, "attempt": 1}]}),
    ("GET", "/api/workers/" + "x" * 255, None),
])
async def test_workers_that_do_not_exist(api: Seeded, method: str, path: str, body: Any) -> None:
    error(await api.client.request(method, path, json=body), 404, "RESOURCE_NOT_FOUND")


async def test_worker_id_too_long(api: Seeded) -> None:
    error(await api.client.get("/api/workers/" + "x" * 256), 422, "VALIDATION_ERROR", "worker_id")


# -- size limits and headers --------------------------------------------------------------------------

ELEVEN_MB = 11 * 1024 * 1024


@pytest.mark.parametrize("path", ["/api/tasks", "/api/workers/{worker}/report"])
async def test_body_over_the_limit(api: Seeded, path: str) -> None:
    padding = "x" * ELEVEN_MB
    response = await api.client.post(api.fill(path), content=f'{{"name": "{padding}"}}'.encode(),
                                     headers={"Content-Type": "application/json"})
    error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_body_over_the_limit_without_content_length(api: Seeded) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = await api.client.post("/api/tasks", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_idempotency_key_too_long(api: Seeded) -> None:
    response = await api.client.post(f"/api/tasks/{api.task}/trigger", headers={"Idempotency-Key": "k" * 300})
    error(response, 422, "VALIDATION_ERROR", "Idempotency-Key")


async def test_nothing_was_created(api: Seeded) -> None:
    """None of the refused requests above left anything behind."""
    tasks = await list_items(api.client, "/api/tasks")
    assert [t["name"] for t in tasks["items"]] == ["seed"]
    assert (await list_items(api.client, "/api/runs"))["total"] == 1
    workers = await list_items(api.client, "/api/workers")
    assert [w["id"] for w in workers["items"]] == [api.worker]
    run = data(await api.client.get(f"/api/runs/{api.run}"))
    assert (run["status"], run["attempt"], run["logs"]) == ("running", 1, [])
