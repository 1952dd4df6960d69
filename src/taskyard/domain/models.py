"""Frozen entities built from storage rows at the boundary; nothing here talks to a database."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from functools import cache, partial
from typing import Any, Self, Union, get_args, get_origin, get_type_hints

from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind, WorkerStatus


class _Entity:
    @classmethod
    def from_row(cls, row: Any) -> Self:
        """Build from a mapping (a SQLAlchemy row mapping); columns the entity lacks are ignored.

        The fields are set straight into the new object's __dict__, past the generated __init__ of a
        frozen dataclass (one object.__setattr__ per field): a page of runs spent more time there than in
        the database. What __init__ would refuse (a required field missing) is refused here too."""
        mapping = row if isinstance(row, dict) else dict(row)
        names, required, defaults = _layout(cls)  # type: ignore[arg-type]
        values = {key: value for key, value in mapping.items() if key in names}
        for key, enum_type in _enum_fields(cls).items():  # type: ignore[arg-type]
            value = values.get(key)
            if value is not None:
                values[key] = enum_type(value)
        if not required <= values.keys():
            missing = ", ".join(sorted(required - values.keys()))
            raise TypeError(f"{cls.__name__}.from_row() is missing {missing}")
        entity = object.__new__(cls)
        entity.__dict__.update({name: make() for name, make in defaults.items() if name not in values})
        entity.__dict__.update(values)
        return entity

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)  # type: ignore[type-var]


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


@cache
def _layout(cls: type) -> tuple[frozenset[str], frozenset[str], dict[str, Callable[[], Any]]]:
    """Every field, the required ones, and how to make the default of each of the others."""
    required: set[str] = set()
    defaults: dict[str, Callable[[], Any]] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            defaults[f.name] = partial(_same, f.default)
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory
        else:
            required.add(f.name)
    return _field_names(cls), frozenset(required), defaults


def _same(value: Any) -> Any:
    return value


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
class Command:
    """What a worker needs of a run's task to execute the run, as the task is when the run is claimed."""

    command: str
    arguments: list[str]
    metadata: dict[str, Any]

    @classmethod
    def of(cls, task: Task) -> Command:
        return cls(task.command, list(task.arguments), dict(task.metadata))


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
