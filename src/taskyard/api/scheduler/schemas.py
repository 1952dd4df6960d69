"""Request bodies of the scheduler API (spec 2). Unknown fields are refused so typos surface."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, StrictStr, field_validator

INT4_MAX = 2**31 - 1


def _storable(value: Any) -> Any:
    """Refuse what the databases or JSON cannot hold: NUL characters and lone surrogates in text (keys
    too), non-finite numbers, integers past 64 bits. Walks lists and free-form JSON objects."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)
    return value


def _task_ref(value: Any) -> str | int:
    """A dependency: a task id or a task name (one error for anything else, not one per union member)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)
                                  and -(2**63) <= value < 2**63):
        return value
    raise ValueError("a dependency is a task id (a 64-bit integer) or a task name (string)")


TaskRef = Annotated[str | int, PlainValidator(_task_ref, json_schema_input_type=str | int)]


class _Clean(BaseModel):
    @field_validator("*", mode="after")
    @classmethod
    def _storable_values(cls, value: Any) -> Any:
        return _storable(value)


class _Body(_Clean):
    model_config = ConfigDict(extra="forbid")


class TaskCreate(_Body):
    name: StrictStr = Field(min_length=1, max_length=255)
    description: StrictStr | None = Field(None, max_length=10_000)
    task_type: StrictStr = Field(min_length=1, max_length=64)
    executor: StrictStr | None = Field(None, max_length=64)
    command: StrictStr = Field(min_length=1, max_length=100_000)
    arguments: list[StrictStr] = Field(default_factory=list, max_length=1000)
    schedule: StrictStr | None = Field(None, max_length=255)
    timezone: StrictStr = Field("UTC", max_length=64)
    catchup: StrictStr = Field("latest", max_length=16)
    priority: StrictStr = "normal"
    retry_count: StrictInt = 3
    timeout_seconds: StrictInt = 3600
    dependencies: list[TaskRef] = Field(default_factory=list, max_length=1000)
    tags: list[StrictStr] = Field(default_factory=list, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskUpdate(_Body):
    name: StrictStr | None = Field(None, min_length=1, max_length=255)
    description: StrictStr | None = Field(None, max_length=10_000)
    task_type: StrictStr | None = Field(None, min_length=1, max_length=64)
    executor: StrictStr | None = Field(None, max_length=64)
    command: StrictStr | None = Field(None, min_length=1, max_length=100_000)
    arguments: list[StrictStr] | None = Field(None, max_length=1000)
    schedule: StrictStr | None = Field(None, max_length=255)
    timezone: StrictStr | None = Field(None, max_length=64)
    catchup: StrictStr | None = Field(None, max_length=16)
    priority: StrictStr | None = None
    retry_count: StrictInt | None = None
    timeout_seconds: StrictInt | None = None
    dependencies: list[TaskRef] | None = Field(None, max_length=1000)
    tags: list[StrictStr] | None = Field(None, max_length=100)
    metadata: dict[str, Any] | None = None

    def changes(self) -> dict[str, Any]:
        """Fields the client sent. `schedule: null` clears the schedule; other nulls are ignored."""
        sent = self.model_dump(exclude_unset=True)
        return {k: v for k, v in sent.items() if v is not None or k in {"schedule", "description"}}


class TriggerBody(_Body):
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: StrictStr | None = None
    timeout_seconds: StrictInt | None = None


class WorkerRegister(_Body):
    hostname: StrictStr = Field(min_length=1, max_length=255)
    ip_address: StrictStr = Field(min_length=1, max_length=64)
    port: StrictInt = Field(ge=0, le=65535)
    task_types: list[StrictStr] = Field(min_length=1, max_length=50)
    max_concurrent_tasks: StrictInt = Field(5, ge=1, le=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: StrictStr | None = Field(None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")


class WorkerUpdate(_Body):
    max_concurrent_tasks: StrictInt | None = Field(None, ge=1, le=10_000)
    task_types: list[StrictStr] | None = Field(None, min_length=1, max_length=50)
    status: StrictStr | None = None
    metadata: dict[str, Any] | None = None


class HeartbeatBody(_Body):
    current_task_count: StrictInt | None = Field(None, ge=0, le=INT4_MAX)
    load_average: float | None = None
    memory_usage: StrictInt | None = Field(None, ge=0)
    cpu_usage: float | None = Field(None, ge=0)
    current_tasks: list[StrictInt] = Field(default_factory=list, max_length=10_000)
    metadata: dict[str, Any] | None = None


def _printable(value: Any) -> Any:
    """What a task printed is kept, not refused: NUL and undecodable characters become U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return value


class RunReportBody(_Body):
    run_id: StrictInt
    attempt: StrictInt = Field(ge=1)
    outcome: Literal["completed", "failed", "timed_out", "aborted"] | None = None
    result: StrictStr | None = Field(None, max_length=1_000_000)
    error_message: StrictStr | None = Field(None, max_length=100_000)
    exit_code: StrictInt | None = Field(None, ge=-INT4_MAX - 1, le=INT4_MAX)

    _printable_text = field_validator("result", "error_message", mode="before")(_printable)


class ReportBody(_Body):
    reports: list[RunReportBody] = Field(min_length=1, max_length=10_000)


class PollBody(_Body):
    capacity: StrictInt = Field(1, ge=0, le=1000)
    running: list[StrictInt] = Field(default_factory=list, max_length=10_000)
    wait: float = Field(20.0, ge=0, le=60)
    # Outcomes applied before the claim, exactly as POST …/report would apply them.
    reports: list[RunReportBody] = Field(default_factory=list, max_length=10_000)
