"""Entities built from storage rows: the same objects __init__ would make, refused where it would refuse."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskyard.domain.models import Run, Task
from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RUN = {"id": 7, "uuid": "u-7", "task_id": 1, "task_name": "t", "task_type": "shell", "status": "running",
       "priority": "high", "parameters": {"a": 1}, "timeout_seconds": 60, "max_retries": 2, "retry_count": 0,
       "attempt": 1, "trigger": "cron", "created_at": NOW, "updated_at": NOW}


def test_a_row_makes_the_entity_init_makes() -> None:
    built = Run.from_row({**RUN, "priority_rank": 2, "worker_id": "w", "not_a_field": "ignored"})
    assert built == Run(**{**RUN, "status": RunStatus.RUNNING, "priority": Priority.HIGH,
                           "trigger": TriggerKind.CRON}, worker_id="w")
    assert (built.status, built.priority, built.trigger) == (RunStatus.RUNNING, Priority.HIGH, TriggerKind.CRON)
    assert built.execution_time is None and built.project_id == 1  # defaults of columns not given
    assert built.evolve(attempt=2).attempt == 2 and built.attempt == 1
    with pytest.raises(AttributeError):
        built.attempt = 3  # type: ignore[misc]


def test_defaults_from_factories_are_fresh_and_missing_fields_are_refused() -> None:
    row = {"id": 1, "uuid": "u", "name": "n", "description": None, "task_type": "shell", "executor": "shell",
           "command": "c", "arguments": [], "schedule": None, "timezone": "UTC", "catchup": "latest",
           "priority": "normal", "retry_count": 0, "timeout_seconds": 1, "status": "paused", "tags": [],
           "metadata": {}, "created_at": NOW, "updated_at": NOW}
    one, two = Task.from_row(row), Task.from_row(row)
    assert one.status is TaskStatus.PAUSED and one.dependencies == [] and one.dependencies is not two.dependencies
    with pytest.raises(TypeError, match="missing attempt"):
        Run.from_row({k: v for k, v in RUN.items() if k != "attempt"})
