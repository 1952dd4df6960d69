"""Request bodies of the scheduler API (spec 2). Unknown fields are refused so typos surface."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Body(BaseModel):
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
    dependencies: list[StrictStr | StrictInt] = Field(default_factory=list, max_length=1000)
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
    dependencies: list[StrictStr | StrictInt] | None = Field(None, max_length=1000)
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
    current_task_count: StrictInt | None = Field(None, ge=0)
    load_average: float | None = None
    memory_usage: StrictInt | None = Field(None, ge=0)
    cpu_usage: float | None = Field(None, ge=0)
    current_tasks: list[StrictInt] = Field(default_factory=list, max_length=10_000)
    metadata: dict[str, Any] | None = None


class PollBody(_Body):
    capacity: StrictInt = Field(1, ge=0, le=1000)
    running: list[StrictInt] = Field(default_factory=list, max_length=10_000)
    wait: float = Field(20.0, ge=0, le=60)


class LogLineBody(BaseModel):
    timestamp: str | None = None
    level: StrictStr = "info"
    stream: StrictStr = "stdout"
    message: StrictStr = Field(max_length=65_536)


class RunReportBody(_Body):
    run_id: StrictInt
    attempt: StrictInt = Field(ge=1)
    logs: list[LogLineBody] = Field(default_factory=list, max_length=10_000)
    outcome: StrictStr | None = None
    result: StrictStr | None = Field(None, max_length=1_000_000)
    error_message: StrictStr | None = Field(None, max_length=100_000)
    exit_code: StrictInt | None = None


class ReportBody(_Body):
    reports: list[RunReportBody] = Field(min_length=1, max_length=10_000)
