"""Small helpers for the scheduler API tests: the envelope, tasks, and the worker protocol over HTTP."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conftest import TEMPLATE, FakeClock, _admin_conninfo, _database_url, app_with, server_settings
from taskyard.storage import migrate

ALL_TYPES = ["shell", "python", "http"]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _check_metadata(body: dict[str, Any], response: httpx.Response) -> None:
    meta = body["metadata"]
    assert set(meta) >= {"timestamp", "request_id", "version"}, meta
    assert meta["request_id"] == response.headers["x-request-id"]
    assert REQUEST_ID.match(meta["request_id"])
    assert meta["version"]
    datetime.fromisoformat(meta["timestamp"].replace("Z", "+00:00"))


def data(response: httpx.Response, status: int = 200) -> Any:
    """The `data` of a success envelope, after checking the envelope and the status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True, body
    assert set(body) == {"success", "data", "metadata"}, body
    _check_metadata(body, response)
    return body["data"]


def error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The `error` of a failure envelope, after checking status, code and (if given) details.field."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False, body
    assert set(body) == {"success", "error", "metadata"}, body
    _check_metadata(body, response)
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    if field is not None:
        assert err["details"].get("field") == field, err
    return err


def ts(value: datetime) -> str:
    """How the API writes an instant: ISO 8601 in UTC with a Z."""
    return value.isoformat().replace("+00:00", "Z")


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@contextlib.asynccontextmanager
async def clocked(database_url: str, clock: FakeClock | None = None) -> AsyncIterator[
        tuple[httpx.AsyncClient, FakeClock]]:
    """The whole app on a clock the test moves by hand."""
    clock = clock or FakeClock()
    async with app_with(server_settings(database_url), clock=clock) as client:
        yield client, clock


@contextlib.contextmanager
def shared_database(kind: str, directory: Path, postgres_template: str | None) -> Iterator[str]:
    """A fresh migrated database for a whole module (the `database_url` fixture is per test)."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'taskyard.db'}"
        migrate.upgrade(url)
        yield url
        return
    if postgres_template is None:
        pytest.skip("set TASKYARD_TEST_POSTGRES_URL to run the PostgreSQL half")
    name = f"taskyard_m_{secrets.token_hex(5)}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield _database_url(name)
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def create_task(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    body = {"task_type": "shell", "command": f"echo {name}", **fields, "name": name}
    return data(await client.post("/api/tasks", json=body), 201)  # type: ignore[no-any-return]


async def trigger(client: httpx.AsyncClient, task_id: int, **body: Any) -> dict[str, Any]:
    return data(await client.post(f"/api/tasks/{task_id}/trigger", json=body))  # type: ignore[no-any-return]


async def register(client: httpx.AsyncClient, hostname: str = "host-1", *,
                   task_types: Iterable[str] = ALL_TYPES, **fields: Any) -> dict[str, Any]:
    body = {"hostname": hostname, "ip_address": "10.0.0.1", "port": 9000, "task_types": list(task_types),
            **fields}
    return data(await client.post("/api/workers", json=body), 201)  # type: ignore[no-any-return]


async def poll(client: httpx.AsyncClient, worker_id: str, capacity: int = 1,
               running: Iterable[int] = ()) -> dict[str, Any]:
    response = await client.post(f"/api/workers/{worker_id}/poll",
                                 json={"capacity": capacity, "running": list(running), "wait": 0})
    return data(response)  # type: ignore[no-any-return]


async def report(client: httpx.AsyncClient, worker_id: str, run_id: int, attempt: int,
                 outcome: str | None = "completed", **fields: Any) -> httpx.Response:
    one = {"run_id": run_id, "attempt": attempt, "outcome": outcome, **fields}
    return await client.post(f"/api/workers/{worker_id}/report", json={"reports": [one]})


async def claim_one(client: httpx.AsyncClient, worker_id: str, running: Iterable[int] = ()) -> dict[str, Any]:
    runs = (await poll(client, worker_id, 1, running))["runs"]
    assert len(runs) == 1, runs
    return runs[0]  # type: ignore[no-any-return]


async def finish(client: httpx.AsyncClient, worker_id: str, claimed: dict[str, Any],
                 outcome: str = "completed", **fields: Any) -> dict[str, Any]:
    answer = data(await report(client, worker_id, claimed["run_id"], claimed["attempt"], outcome, **fields))
    assert answer["accepted"] == [claimed["run_id"]], answer
    return await get_run(client, claimed["run_id"])


async def send_logs(client: httpx.AsyncClient, run_id: int, lines: list[dict[str, Any]]) -> None:
    """Log lines of a run, sent as the worker sends them: through the tracking batch endpoint."""
    response = await client.post("/api/tracking/batch", json={"logs": [{"runId": run_id, **line} for line in lines]})
    assert response.status_code == 200, response.text


async def run_task(client: httpx.AsyncClient, task_id: int, worker_id: str, outcome: str = "completed",
                   clock: FakeClock | None = None, seconds: float = 0.0, logs: list[dict[str, Any]] | None = None,
                   **fields: Any) -> dict[str, Any]:
    """Trigger a task, claim its run, (let `seconds` pass), send `logs` and report `outcome`; returns the run."""
    run_id = (await trigger(client, task_id))["run_id"]
    claimed = await claim_one(client, worker_id)
    assert claimed["run_id"] == run_id
    if clock is not None:
        clock.advance(seconds)
    if logs:
        await send_logs(client, run_id, logs)
    return await finish(client, worker_id, claimed, outcome, **fields)


async def get_run(client: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    return data(await client.get(f"/api/runs/{run_id}"))  # type: ignore[no-any-return]


async def get_task(client: httpx.AsyncClient, task_id: int) -> dict[str, Any]:
    return data(await client.get(f"/api/tasks/{task_id}"))  # type: ignore[no-any-return]


async def list_items(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    return data(await client.get(path, params=params))  # type: ignore[no-any-return]
