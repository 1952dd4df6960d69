"""Direct dispatch over HTTP on both databases: a trigger hands its run to a worker whose long poll waits
on the server, in the trigger's own transaction, with the claim's guarantees and history."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from helpers import clocked, create_task, data, finish, get_run, register, trigger

from taskyard.services.dispatch import WaitingPoll


def waiting_polls(client: httpx.AsyncClient) -> int:
    transport: Any = client._transport  # the app behind the in-process client
    return len(transport.app.state.core.dispatch)


async def long_poll(client: httpx.AsyncClient, worker_id: str, wait: float) -> asyncio.Task[httpx.Response]:
    """A poll that is waiting on the server by the time this returns."""
    before = waiting_polls(client)
    request = asyncio.create_task(client.post(f"/api/workers/{worker_id}/poll",
                                              json={"capacity": 1, "running": [], "wait": wait}))
    for _ in range(500):
        if waiting_polls(client) > before:
            return request
        await asyncio.sleep(0.01)
    raise AssertionError("the poll never waited")


async def test_a_trigger_hands_its_run_to_the_waiting_poll(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        worker = await register(client, "waiter", task_types=["shell"])
        task = await create_task(client, "handed")
        polling = await long_poll(client, worker["id"], 10)
        answer = await trigger(client, task["id"])
        # The trigger's answer already names the worker: the run never sat in the queue.
        assert (answer["status"], answer["worker_id"]) == ("running", worker["id"])
        polled = data(await polling)
        assert [(r["run_id"], r["attempt"], r["command"]) for r in polled["runs"]] == [
            (answer["run_id"], 1, "echo handed")]
        run = await get_run(client, answer["run_id"])
        assert [h["status"] for h in run["history"]] == ["queued", "running"]
        assert run["worker_id"] == worker["id"] and run["started_at"] is not None
        assert waiting_polls(client) == 0
        done = await finish(client, worker["id"], polled["runs"][0])
        assert done["state"] == "completed"


async def test_a_poll_that_cannot_run_the_task_is_passed_over(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        http_only = await register(client, "http-only", task_types=["http"])
        shell = await register(client, "shell", task_types=["shell"])
        task = await create_task(client, "for-shell")
        passed_over = await long_poll(client, http_only["id"], 0.5)
        taker = await long_poll(client, shell["id"], 10)
        answer = await trigger(client, task["id"])
        assert answer["worker_id"] == shell["id"]
        assert [r["run_id"] for r in data(await taker)["runs"]] == [answer["run_id"]]
        assert data(await passed_over)["runs"] == []


async def test_without_a_waiting_poll_the_run_is_queued_and_claimed(database_url: str) -> None:
    async with clocked(database_url) as (client, _clock):
        worker = await register(client, "late", task_types=["shell"])
        task = await create_task(client, "queued")
        answer = await trigger(client, task["id"])
        assert (answer["status"], answer["worker_id"]) == ("pending", None)  # the spec's word for queued
        polled = data(await client.post(f"/api/workers/{worker['id']}/poll",
                                         json={"capacity": 1, "running": [], "wait": 0}))
        assert [r["run_id"] for r in polled["runs"]] == [answer["run_id"]]


async def test_a_poll_left_behind_by_a_drained_worker_gets_nothing(database_url: str) -> None:
    """A poll waiting in memory can outlive its worker's active state (drained or removed through another
    server): the hand-over checks the worker in the database and the run stays queued for others."""
    async with clocked(database_url) as (client, _clock):
        worker = await register(client, "leaving", task_types=["shell"])
        task = await create_task(client, "stays-queued")
        data(await client.put(f"/api/workers/{worker['id']}", json={"status": "draining"}))
        transport: Any = client._transport
        stale = WaitingPoll(worker["id"], 1, "leaving", frozenset({"shell"}))
        transport.app.state.core.dispatch.add(stale)
        answer = await trigger(client, task["id"])
        assert (answer["status"], answer["worker_id"]) == ("pending", None)
        assert stale.handed.done() and stale.handed.result() is None
        run = await get_run(client, answer["run_id"])
        assert [h["status"] for h in run["history"]] == ["queued"]
