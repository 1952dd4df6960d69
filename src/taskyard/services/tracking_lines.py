"""Log lines and metric samples sent as such, beside events, in one tracking batch.

The worker sends what a run printed and what it measured of the run's process tree this way; code
that has its lines ready may too. Unlike a `log` or `metric` event (read leniently, a plain event when
its payload does not fit), these are checked strictly: a bad item refuses the batch, naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskyard.domain.errors import ValidationFailed
from taskyard.domain.models import Run
from taskyard.services.tracking_ingest import MAX_NAME, MAX_UNIT, level_of

MAX_MESSAGE = 65_536
MAX_STREAM = 16
SOURCES = ("task", "worker")


@dataclass(slots=True)
class TrackingLog:
    run_id: str
    message: str
    level: str | None = None
    stream: str | None = None  # stdout, stderr, system (the worker's); sdk when not given
    attempt: int | None = None  # the run's current attempt when not given
    timestamp: datetime | None = None
    component: str | None = None
    stage: str | None = None
    details: Any = None


@dataclass(slots=True)
class TrackingSample:
    run_id: str
    name: str
    value: float
    unit: str | None = None
    source: str | None = None  # task (what the code reported) or worker (its process tree); task when not given
    timestamp: datetime | None = None


def check_log(log: TrackingLog, index: int) -> None:
    where = f"logs[{index}]."
    _run_id(log.run_id, where)
    if not isinstance(log.message, str):
        raise ValidationFailed(f"{where}message is required and must be a string", field="message",
                               rule="required", value=None)
    if len(log.message) > MAX_MESSAGE:
        raise ValidationFailed(f"{where}message must be at most {MAX_MESSAGE} characters", field="message",
                               rule="max_length", value=len(log.message))
    for name, value, limit in (("level", log.level, MAX_STREAM), ("stream", log.stream, MAX_STREAM),
                               ("component", log.component, MAX_NAME), ("stage", log.stage, MAX_NAME)):
        _optional_text(value, limit, where + name, name)
    if log.attempt is not None and (type(log.attempt) is not int or not 1 <= log.attempt <= 2**31 - 1):
        raise ValidationFailed(f"{where}attempt must be a positive whole number", field="attempt",
                               rule="positive", value=log.attempt)


def check_sample(sample: TrackingSample, index: int) -> None:
    where = f"samples[{index}]."
    _run_id(sample.run_id, where)
    if not isinstance(sample.name, str) or not sample.name.strip() or len(sample.name) > MAX_NAME:
        raise ValidationFailed(f"{where}name is required, at most {MAX_NAME} characters", field="name",
                               rule="required", value=sample.name if isinstance(sample.name, str) else None)
    value = sample.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{where}value must be a finite number", field="value", rule="number",
                               value=value if isinstance(value, str | int | float) else None)
    _optional_text(sample.unit, MAX_UNIT, where + "unit", "unit")
    if sample.source is not None and sample.source not in SOURCES:
        raise ValidationFailed(f"{where}source must be one of {', '.join(SOURCES)}", field="source",
                               rule="one_of", value=sample.source)


def log_row(run: Run, log: TrackingLog, at: datetime) -> tuple[Any, ...]:
    """A run_logs row (storage.tracking.LOG_COLUMNS)."""
    details = log.details
    if details is not None and not isinstance(details, dict):
        details = {"value": details}
    return (run.id, log.attempt or run.attempt, at, level_of(log.level), log.stream or "sdk", log.message,
            log.component or None, log.stage or None, details or None)


def sample_row(run: Run, sample: TrackingSample, at: datetime) -> tuple[Any, ...]:
    """A run_samples row (storage.tracking.SAMPLE_COLUMNS)."""
    return (run.id, sample.name.strip(), float(sample.value), sample.unit or None, sample.source or "task", at)


def _run_id(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise ValidationFailed(f"{where}runId is required and must be a non-empty string", field="runId",
                               rule="required", value=value if isinstance(value, str) else None)


def _optional_text(value: Any, limit: int, where: str, field: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationFailed(f"{where} must be a string of at most {limit} characters", field=field,
                               rule="max_length", value=value if isinstance(value, str) else None)
