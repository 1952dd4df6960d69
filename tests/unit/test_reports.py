"""Reporting: the flusher against the fake server without an agent around it, and the report buffer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from agent_kit import (
    SERVER,
    TRACKING_MAX,
    FakeServer,
    reported_items,
    settings,
)

from taskyard.worker import reports
from taskyard.worker.protocol import ServerApi, ServerError
from taskyard.worker.reports import ReportBuffer, ReportFlusher
from taskyard.worker.session import Session

# --------------------------------------------------------------------------------------------------
# The flusher against the fake, without an agent around it


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@contextlib.asynccontextmanager
async def flusher_for(fake: FakeServer, *runs: int) -> AsyncIterator[tuple[ReportBuffer, ReportFlusher, list[int]]]:
    """A flusher registered as worker "w", whose ``runs`` the fake knows and hands to it."""
    fake.next_run_id = max(runs, default=0) + 1
    fake.held.update({run_id: 1 for run_id in runs})
    fake.worker_ids.add("w")
    rejected: list[int] = []
    async with fake.client() as client:
        api = ServerApi(SERVER, None, client)
        session = Session(settings(), api, wake=asyncio.Event(), on_forgotten=lambda reason: None)
        session.worker_id = "w"
        session.registered.set()
        buffer = ReportBuffer()
        flusher = ReportFlusher(buffer, api, session, reject=lambda run, attempt, why: rejected.append(run))
        yield buffer, flusher, rejected


async def drain(buffer: ReportBuffer, flusher: ReportFlusher, max_sends: int = 100) -> None:
    for _ in range(max_sends):
        if buffer.empty:
            return
        delivered, _ = await flusher.send()
        assert delivered
    raise AssertionError("the buffer did not drain")


def _outcome(outcome: str = "completed") -> dict[str, Any]:
    return {"outcome": outcome, "result": None, "error_message": None, "exit_code": 0}


def _samples(n: int, name: str = "cpu") -> list[dict[str, Any]]:
    return [{"name": name, "value": float(i), "unit": "percent", "timestamp": "t"} for i in range(n)]


async def test_samples_per_request_stay_within_the_servers_limit(fake: FakeServer) -> None:
    runs = list(range(1, 31))
    async with flusher_for(fake, *runs) as (buffer, flusher, rejected):
        for run_id in runs:
            buffer.add_logs(run_id, 1, _lines(2))
            buffer.add_samples(run_id, 1, _samples(reports.MAX_SAMPLES))
            buffer.add_outcome(run_id, 1, _outcome())
        await drain(buffer, flusher)
    assert not rejected
    assert all(len(body["samples"]) <= TRACKING_MAX for body in fake.tracking_bodies)
    assert len(fake.tracking_bodies) >= 30 * reports.MAX_SAMPLES // TRACKING_MAX
    assert all(len(fake.samples[run_id]) == reports.MAX_SAMPLES for run_id in runs)
    assert all(fake.outcomes[run_id]["outcome"] == "completed" for run_id in runs)
    # An outcome goes only once the last sample of its run is delivered.
    for run_id in runs:
        last = max(i for i, body in enumerate(fake.tracking_bodies)
                   if any(sample["runId"] == str(run_id) for sample in body["samples"]))
        assert not any(item["run_id"] == run_id for body in fake.report_bodies[:last] for item in body["reports"])


async def test_a_tracking_body_too_large_is_sent_again_in_smaller_requests(fake: FakeServer) -> None:
    fake.tracking_max_lines = 1_500
    async with flusher_for(fake, 1) as (buffer, flusher, _):
        buffer.add_logs(1, 1, _lines(4_000))
        buffer.add_outcome(1, 1, _outcome())
        await drain(buffer, flusher)
    assert fake.messages(1) == [f"l{i}" for i in range(4_000)]
    assert fake.outcomes[1]["outcome"] == "completed"


@pytest.mark.parametrize("status", [404, 422])
async def test_lines_of_a_refused_tracking_call_are_dropped_and_outcomes_kept(fake: FakeServer, status: int) -> None:
    fake.tracking_status = status
    async with flusher_for(fake, 1, 2) as (buffer, flusher, _):
        buffer.add_logs(1, 1, _lines(3))
        buffer.add_outcome(1, 1, _outcome())
        buffer.add_logs(2, 1, _lines(3))  # still running: nothing for the report endpoint
        await drain(buffer, flusher)
    assert not fake.logs
    assert [item["run_id"] for item in reported_items(fake)] == [1]


@pytest.mark.parametrize("status", [401, 403, 429, 500, 503])
async def test_a_tracking_call_that_may_work_later_keeps_the_whole_batch(fake: FakeServer, status: int) -> None:
    fake.tracking_status = status
    async with flusher_for(fake, 1) as (buffer, flusher, _):
        buffer.add_logs(1, 1, _lines(3))
        buffer.add_outcome(1, 1, _outcome())
        delivered, retry_after = await flusher.send()
        assert not delivered and retry_after == (0.1 if status in (429, 503) else None)
        assert not fake.report_bodies and buffer.lines == 3 and buffer.outcomes == 1
        fake.tracking_status = None
        await drain(buffer, flusher)
    assert fake.messages(1) == ["l0", "l1", "l2"]
    assert fake.outcomes[1]["outcome"] == "completed"


async def test_the_api_reads_bare_answers_and_spring_errors() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tracking/batch":
            return httpx.Response(200, json={"accepted": 3})
        body = {"timestamp": "2025-01-01T00:00:00Z", "status": 429, "error": "Too Many Requests",
                "message": "slow down", "path": request.url.path}
        return httpx.Response(429, json=body, headers={"Retry-After": "2"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        api = ServerApi(SERVER, None, client)
        assert await api.call("POST", "/tracking/batch", {"logs": []}, enveloped=False) == {"accepted": 3}
        with pytest.raises(ServerError) as refused:
            await api.call("POST", "/tracking/event", {}, enveloped=False)
    assert refused.value.status == 429 and refused.value.code == "HTTP_429"
    assert refused.value.message == "slow down" and refused.value.retry_after == 2.0


# --------------------------------------------------------------------------------------------------
# The report buffer on its own


def _lines(n: int, prefix: str = "l") -> list[dict[str, Any]]:
    return [{"timestamp": "t", "level": "info", "stream": "stdout", "message": f"{prefix}{i}"} for i in range(n)]


def test_buffer_drops_oldest_lines_but_keeps_outcomes() -> None:
    buffer = ReportBuffer(max_lines=10)
    buffer.add_logs(1, 1, _lines(6, "a"))
    buffer.add_outcome(1, 1, {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0})
    buffer.add_logs(2, 1, _lines(8, "b"))
    assert buffer.lines == 10
    assert buffer.take_dropped() == 4
    batch = buffer.take(100, 10**6, 100)
    assert [p.run_id for p in batch] == [1, 2]
    assert [line["message"] for line in batch[0].logs] == ["a4", "a5"]
    assert batch[0].final is not None and batch[0].final["outcome"] == "completed"
    assert len(batch[1].logs) == 8


def test_buffer_sends_an_outcome_only_with_the_last_of_its_logs() -> None:
    buffer = ReportBuffer()
    buffer.add_logs(1, 1, _lines(5))
    buffer.add_outcome(1, 1, {"outcome": "failed", "result": None, "error_message": "x", "exit_code": 1})
    first = buffer.take(3, 10**6, 100)
    assert len(first[0].logs) == 3 and first[0].final is None
    second = buffer.take(3, 10**6, 100)
    assert len(second[0].logs) == 2 and second[0].final is not None
    assert buffer.empty


def test_buffer_restores_a_failed_batch_in_front() -> None:
    buffer = ReportBuffer()
    buffer.add_logs(1, 1, _lines(2, "old"))
    batch = buffer.take(100, 10**6, 100)
    buffer.add_logs(1, 1, _lines(1, "new"))
    buffer.restore(batch)
    again = buffer.take(100, 10**6, 100)
    assert [line["message"] for line in again[0].logs] == ["old0", "old1", "new0"]
    assert buffer.lines == 0


def test_buffer_due_times() -> None:
    buffer = ReportBuffer()
    assert buffer.due_at(time.monotonic()) is None
    buffer.add_logs(1, 1, _lines(1))
    now = time.monotonic()
    assert now < buffer.due_at(now) <= now + reports.FLUSH_DELAY_SECONDS  # type: ignore[operator]
    buffer.add_outcome(1, 1, {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0})
    assert buffer.due_at(now) <= time.monotonic() + reports.OUTCOME_DELAY_SECONDS  # type: ignore[operator]
    buffer.add_logs(2, 1, _lines(reports.FLUSH_LINES))
    assert buffer.due_at(now) == now


def test_an_outcome_alone_waits_for_a_poll_while_polls_claim_runs() -> None:
    buffer = ReportBuffer()
    outcome = {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0}
    buffer.add_outcome(1, 1, outcome)
    now = time.monotonic()
    assert buffer.due_at(now) <= now + reports.OUTCOME_DELAY_SECONDS  # type: ignore[operator]
    buffer.polls_busy = True
    assert buffer.due_at(now) > now + reports.OUTCOME_DELAY_SECONDS  # type: ignore[operator]
    assert buffer.due_at(now) <= now + reports.RIDE_DELAY_SECONDS  # type: ignore[operator]
    # An outcome behind lines of its run cannot ride: it goes with them, soon.
    buffer.add_logs(2, 1, _lines(1))
    buffer.add_outcome(2, 1, outcome)
    assert buffer.due_at(now) <= time.monotonic() + reports.OUTCOME_DELAY_SECONDS  # type: ignore[operator]
    taken = buffer.take_outcomes(10)
    assert [(part.run_id, part.logs) for part in taken] == [(1, deque())], "only the one with nothing else"
    assert buffer.riding == taken and buffer.held_run_ids() == [2, 1]
    buffer.landed()
    assert buffer.held_run_ids() == [2]


def test_buffer_sends_samples_with_the_next_item_and_restores_them() -> None:
    buffer = ReportBuffer()
    buffer.add_samples(1, 1, [{"name": "cpu", "value": 1.0, "unit": "percent", "timestamp": "t"}])
    assert not buffer.empty
    batch = buffer.take(100, 10**6, 100)
    assert batch[0].tracking_samples() == [
        {"runId": "1", "name": "cpu", "value": 1.0, "unit": "percent", "timestamp": "t", "source": "worker"}
    ]
    assert batch[0].final is None and batch[0].outcome_only() is None
    assert buffer.empty
    buffer.add_samples(1, 1, [{"name": "cpu", "value": 2.0, "unit": "percent", "timestamp": "t"}])
    buffer.restore(batch)
    buffer.add_outcome(1, 1, {"outcome": "completed", "result": None, "error_message": None, "exit_code": 0})
    [again] = buffer.take(100, 10**6, 100)
    assert [sample["value"] for sample in again.samples] == [1.0, 2.0] and again.final is not None
    assert buffer.empty
    buffer.add_samples(2, 1, [{"name": "cpu", "value": float(i), "unit": "percent", "timestamp": "t"}
                              for i in range(reports.MAX_SAMPLES + 5)])
    [capped] = buffer.take(100, 10**6, 100)
    assert len(capped.samples) == reports.MAX_SAMPLES and capped.samples[0]["value"] == 5.0


def test_buffer_budgets_samples_per_request() -> None:
    buffer = ReportBuffer()
    for run_id in (1, 2, 3):
        buffer.add_samples(run_id, 1, _samples(reports.MAX_SAMPLES))
        buffer.add_outcome(run_id, 1, _outcome())
    first = buffer.take(100, 10**9, 100, max_samples=1_500)
    assert [(p.run_id, len(p.samples), p.final is not None) for p in first] == [(1, 1_000, True), (2, 500, False)]
    second = buffer.take(100, 10**9, 100, max_samples=1_500)
    assert [(p.run_id, len(p.samples), p.final is not None) for p in second] == [(2, 500, True), (3, 1_000, True)]
    assert buffer.empty
    # Samples count against the size budget too, but one always goes, however small the budget.
    buffer.add_samples(4, 1, _samples(3))
    assert [len(p.samples) for p in buffer.take(100, 1, 100)] == [1]
