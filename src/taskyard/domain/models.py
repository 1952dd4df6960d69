"""Frozen entities built from storage rows at the boundary; nothing here talks to a database."""

from __future__ import annotations

import types
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, Self, Union, get_args, get_origin, get_type_hints

from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind, WorkerStatus


class _Entity:
    @classmethod
    def from_row(cls, row: Any) -> Self:
        """Build from a mapping (a SQLAlchemy row mapping); columns the entity lacks are ignored."""
        mapping = row if isinstance(row, dict) else dict(row)
        converters = _enum_fields(cls)  # type: ignore[arg-type]
        names = _field_names(cls)  # type: ignore[arg-type]
        values = {}
        for key, value in mapping.items():
            if key in names:
                enum_type = converters.get(key)
                values[key] = enum_type(value) if enum_type is not None and value is not None else value
        return cls(**values)

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)  # type: ignore[type-var]


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


@cache
def _enum_fields(cls: type) -> dict[str, type[Enum]]:
    """Fields typed with an Enum (optionally `| None`): storage hands us their string values."""
    found: dict[str, type[Enum]] = {}
    for name, hint in get_type_hints(cls).items():
        candidates = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, Enum):
                found[name] = candidate
    return found


@dataclass(frozen=True)
class Task(_Entity):
    id: int
    uuid: str
    name: str
    description: str | None
    task_type: str
    executor: str
    command: str
    arguments: list[str]
    schedule: str | None
    timezone: str
    catchup: str
    priority: Priority
    retry_count: int
    timeout_seconds: int
    status: TaskStatus
    tags: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    last_success_at: datetime | None = None
    last_run_status: str | None = None
    dependencies: list[int] = field(default_factory=list)
    project_id: int = 1


@dataclass(frozen=True)
class Run(_Entity):
    id: int
    uuid: str
    task_id: int
    task_name: str
    task_type: str
    status: RunStatus
    priority: Priority
    parameters: dict[str, Any]
    timeout_seconds: int
    max_retries: int
    retry_count: int
    attempt: int
    trigger: TriggerKind
    created_at: datetime
    updated_at: datetime
    worker_id: str | None = None
    worker_hostname: str | None = None
    lease_expires_at: datetime | None = None
    available_at: datetime | None = None
    scheduled_for: datetime | None = None
    restarted_from: int | None = None
    result: str | None = None
    error_message: str | None = None
    exit_code: int | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time: float | None = None
    project_id: int = 1
    external_id: str | None = None
    progress: float | None = None
    current_activity: dict[str, Any] | None = None
    submitted_by: str | None = None


@dataclass(frozen=True)
class Worker(_Entity):
    id: str
    hostname: str
    ip_address: str
    port: int
    task_types: list[str]
    max_concurrent_tasks: int
    current_task_count: int
    status: WorkerStatus
    last_heartbeat: datetime
    registered_at: datetime
    metadata: dict[str, Any]
    load_average: float | None = None
    memory_usage: int | None = None
    cpu_usage: float | None = None
    project_id: int = 1
