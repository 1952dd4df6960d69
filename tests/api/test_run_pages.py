"""GET /api/runs pages on both databases: every sort gives the same rows page by page as in one long page
(pages past the middle are read from the other end), and totals are exact or say they are not."""

from __future__ import annotations

import httpx
import pytest
from helpers import claim_one, clocked, create_task, finish, list_items, register, trigger

from conftest import FakeClock
from taskyard.storage import runs as run_rows

PRIORITIES = ("low", "normal", "high", "critical", "normal")


async def _history(client: httpx.AsyncClient, clock: FakeClock) -> tuple[int, str]:
    """23 runs a second apart: 15 finished by one worker (some failed, durations differing), then 8
    still queued; two tasks, every priority. Returns the first task's id and the worker's."""
    first = await create_task(client, "first", retry_count=0)
    second = await create_task(client, "second", retry_count=0)
    worker = (await register(client, "box"))["id"]
    for k in range(15):
        task = first if k % 3 else second
        run_id = (await trigger(client, task["id"], priority=PRIORITIES[k % 5]))["run_id"]
        claimed = await claim_one(client, worker)
        assert claimed["run_id"] == run_id
        clock.advance(1 + (k * 7) % 5)
        await finish(client, worker, claimed, "failed" if k % 4 == 0 else "completed")
    for k in range(8):
        clock.advance(1)
        await trigger(client, (first if k % 2 else second)["id"], priority=PRIORITIES[k % 5])
    return first["id"], worker


@pytest.mark.parametrize("sort", sorted(run_rows.SORTABLE))
async def test_every_sort_pages_like_one_long_page(database_url: str, sort: str) -> None:
    async with clocked(database_url) as (client, clock):
        await _history(client, clock)
        for order in ("asc", "desc"):
            whole = await list_items(client, "/api/runs", sort=sort, order=order, size=100)
            assert (whole["total"], whole["total_exact"], len(whole["items"])) == (23, True, 23)
            paged = []
            for number in range(1, 8):
                page = await list_items(client, "/api/runs", sort=sort, order=order, size=4, page=number)
                assert (page["total"], page["total_pages"], page["total_exact"]) == (23, 6, True)
                paged += [r["id"] for r in page["items"]]
            assert paged == [r["id"] for r in whole["items"]], (sort, order)
            if sort in {"status", "priority", "task_id"}:  # equal values: newest first (oldest when asc)
                rank = {"low": 0, "normal": 1, "high": 2, "critical": 3}
                keys = [(rank[r["priority"]] if sort == "priority" else r["state"] if sort == "status"
                         else r[sort], r["created_at"], r["id"]) for r in whole["items"]]
                assert keys == sorted(keys, reverse=order == "desc")


async def test_totals_of_worker_and_date_filters_stop_counting(database_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_rows, "TOTAL_LIMIT", 5)
    async with clocked(database_url) as (client, clock):
        task_id, worker = await _history(client, clock)
        by_worker = await list_items(client, "/api/runs", worker_id=worker, size=4)
        assert (by_worker["total"], by_worker["total_pages"], by_worker["total_exact"]) == (5, 2, False)
        seen = []
        for number in range(1, 6):  # pages past the counted ones still answer
            seen += [r["id"] for r in (await list_items(client, "/api/runs", worker_id=worker, size=4,
                                                        page=number))["items"]]
        everything = await list_items(client, "/api/runs", worker_id=worker, size=100)
        assert seen == [r["id"] for r in everything["items"]] and len(seen) == 15
        one_day = await list_items(client, "/api/runs", start_date="2026-01-05", end_date="2026-01-05")
        assert (one_day["total"], one_day["total_exact"], len(one_day["items"])) == (5, False, 20)
        few = await list_items(client, "/api/runs", worker_id=worker, status="failed")
        assert (few["total"], few["total_exact"], len(few["items"])) == (4, True, 4)
        # Filters the tallies answer are exact however many runs match.
        by_task = await list_items(client, "/api/runs", task_id=task_id, size=1)
        assert (by_task["total"], by_task["total_exact"]) == (14, True)
        assert (await list_items(client, "/api/runs", size=1))["total"] == 23
        past_the_end = await list_items(client, "/api/runs", page=30, size=4)
        assert (past_the_end["items"], past_the_end["total"]) == ([], 23)
