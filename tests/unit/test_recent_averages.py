"""The trigger's remembered averages: moved by runs completing here instead of read again per trigger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus
from taskyard.services.runs import RecentAverages


def _run(task_id: int, status: RunStatus, seconds: float | None) -> Run:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    return Run.from_row({
        "id": 1, "uuid": "u", "project_id": 1, "task_id": task_id, "task_name": "t", "task_type": "shell",
        "status": status.value, "priority": "normal", "priority_rank": 2, "parameters": {}, "timeout_seconds": 60,
        "max_retries": 0, "retry_count": 0, "attempt": 1, "trigger": "manual", "available_at": now,
        "created_at": now, "updated_at": now, "execution_time": seconds})


def test_completed_runs_move_the_average_and_others_do_not() -> None:
    averages = RecentAverages()
    averages.observe(_run(1, RunStatus.COMPLETED, 9.0))  # nothing remembered: nothing to move
    assert averages.get(1) == (False, None)
    averages.put(1, 2.0, 1)
    averages.observe(_run(1, RunStatus.COMPLETED, 4.0))
    assert averages.get(1) == (True, 3.0)
    averages.observe(_run(1, RunStatus.FAILED, 100.0))
    averages.observe(_run(2, RunStatus.COMPLETED, 100.0))
    assert averages.get(1) == (True, 3.0)


def test_a_task_without_an_average_gets_the_first_completed_run() -> None:
    averages = RecentAverages()
    averages.put(1, None, 0)
    averages.observe(_run(1, RunStatus.COMPLETED, 1.5))
    assert averages.get(1) == (True, 1.5)


def test_past_the_sample_the_average_moves_by_one_sample_in_fifty() -> None:
    averages = RecentAverages()
    averages.put(1, 10.0, RecentAverages.SAMPLE)
    run = _run(1, RunStatus.COMPLETED, 60.0)
    averages.observe(run)
    assert averages.get(1) == (True, 11.0)
    averages.observe(replace(run, execution_time=11.0))
    assert averages.get(1) == (True, 11.0)
