"""With the database unreachable, the API answers 503 in the envelope, never a 500."""

from __future__ import annotations

import socket

from conftest import app_with, server_settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_postgres_gives_503() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    async with app_with(server_settings(url)) as client:
        health = await client.get("/api/system/health")
        assert health.status_code == 503
        body = health.json()
        assert body["data"]["status"] == "unhealthy"
        assert body["data"]["components"]["database"]["status"] == "unhealthy"
        assert "Retry-After" in health.headers

        listed = await client.get("/api/tasks")
        assert listed.status_code == 503
        assert listed.json()["error"]["code"] == "DATABASE_ERROR"
        assert listed.headers["Retry-After"]

        created = await client.post("/api/tasks", json={"name": "x", "task_type": "shell", "command": "true"})
        assert created.status_code == 503
