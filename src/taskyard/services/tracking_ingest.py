"""Tracking events interpreted as they arrive, so that reads never replay the event stream.

Every event is stored in run_events as it is; besides that, the names the SDK sends with a known shape
also land where reads want them:

- ``progress`` {percentage, message?} → ``runs.progress`` (0-100) and ``runs.current_activity``
  ``{"operation": message}`` when a message is given;
- ``stage_start`` / ``stage_progress`` / ``stage_end`` → the run's ``run_stages`` row;
- ``log`` {level, message, component?, stage?, details?} → a ``run_logs`` line (stream ``sdk``);
- ``metric`` {name, value, unit?} → a ``run_samples`` row (source ``task``).

Types are checked leniently: a payload that does not fit is only a plain event, never an error.
A batch is applied grouped by run: multi-row inserts, one upsert per touched stage and at most one
UPDATE per run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.models import Run
from taskyard.storage import tracking as tracking_rows

MAX_NAME = 255
MAX_UNIT = 32
MAX_ERROR = 10_000
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
STAGE_RUNNING, STAGE_COMPLETED, STAGE_FAILED = "Running", "Completed", "Failed"
_LEVELS = {"debug": "debug", "trace": "debug", "info": "info", "information": "info", "notice": "info",
           "warn": "warn", "warning": "warn", "error": "error", "err": "error", "critical": "error",
           "fatal": "error", "exception": "error"}


def level_of(word: Any) -> str:
    """debug, info, warn or error, from the words loggers use; info when unknown."""
    return _LEVELS.get(word.strip().lower(), "info") if isinstance(word, str) else "info"


class Malformed(ValueError):
    """The payload of a known event name does not have its shape."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs several times more per event
class _StageEvent:
    kind: str  # start, progress, end
    run_id: int
    stage: str
    at: datetime
    order: int | None = None
    total: int | None = None
    processed: int | None = None
    status: str | None = None
    error: str | None = None


@dataclass
class Interpretation:
    """What one batch of events means beyond run_events; fill with `add`, write with `apply`."""

    logs: list[tuple[Any, ...]] = field(default_factory=list)  # storage.tracking.LOG_COLUMNS
    samples: list[tuple[Any, ...]] = field(default_factory=list)  # storage.tracking.SAMPLE_COLUMNS
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    stages: list[_StageEvent] = field(default_factory=list)

    def add(self, run: Run, name: str, data: Any, at: datetime) -> bool:
        """Interpret one event; False when it is a plain event (unknown name or malformed payload)."""
        handler = _HANDLERS.get(name)
        if handler is None:
            return False
        try:
            handler(self, run, data, at)
        except (Malformed, TypeError, ValueError, OverflowError):
            return False
        return True

    @property
    def empty(self) -> bool:
        return not (self.logs or self.samples or self.progress or self.stages)

    async def apply(self, conn: AsyncConnection, *, now: datetime) -> None:
        # Appends first, row locks (stages, the run's progress) last: two batches of the same run then
        # wait for each other only for the few statements before commit, not for each other's appends.
        await tracking_rows.insert_logs(conn, self.logs)
        await tracking_rows.insert_samples(conn, self.samples)
        if self.stages:
            await tracking_rows.upsert_stages(conn, await self._merged_stages(conn, now))
        for run_id in sorted(self.progress):
            await tracking_rows.update_progress(conn, run_id, self.progress[run_id])

    async def _merged_stages(self, conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
        """The touched stage rows after this batch: stored rows (locked on PostgreSQL) with the batch's
        stage events applied in order."""
        stored = await tracking_rows.stages_of(conn, {e.run_id for e in self.stages}, lock=True)
        rows: dict[tuple[int, str], dict[str, Any]] = {(int(r["run_id"]), r["name"]): r for r in stored}
        last_order: dict[int, int] = {}
        for stored_row in stored:
            run_id = int(stored_row["run_id"])
            last_order[run_id] = max(last_order.get(run_id, 0), int(stored_row["stage_order"]))
        touched: dict[tuple[int, str], dict[str, Any]] = {}
        for event in self.stages:
            key = (event.run_id, event.stage)
            row: dict[str, Any] | None = touched.get(key)  # already a copy of its own: changed in place
            if row is None:
                found = rows.get(key)
                if found is None:
                    order = event.order if event.order is not None else last_order.get(event.run_id, 0) + 1
                    row = {"run_id": event.run_id, "name": event.stage, "stage_order": order,
                           "status": STAGE_RUNNING, "progress": None, "records_processed": None,
                           "total_records": None, "started_at": None, "ended_at": None, "metrics": None}
                else:
                    row = dict(found)
            _apply_stage(row, event)
            row["updated_at"] = now
            last_order[event.run_id] = max(last_order.get(event.run_id, 0), int(row["stage_order"]))
            touched[key] = row
        return list(touched.values())


def _apply_stage(row: dict[str, Any], event: _StageEvent) -> None:
    if event.order is not None:
        row["stage_order"] = event.order
    if event.total is not None:
        row["total_records"] = event.total
    if event.kind == "start":
        row.update(status=STAGE_RUNNING, started_at=event.at, ended_at=None,
                   records_processed=event.processed or 0)
    elif event.kind == "progress":
        if row["started_at"] is None:
            row["started_at"] = event.at
        if event.processed is not None:
            row["records_processed"] = event.processed
    else:
        row.update(status=event.status, ended_at=event.at)
        if event.processed is not None:
            row["records_processed"] = event.processed
        if event.error is not None:
            row["metrics"] = {**(row["metrics"] or {}), "error": event.error}
    if event.kind == "end" and event.status == STAGE_COMPLETED:
        row["progress"] = 100.0
    elif row["records_processed"] is not None and row["total_records"]:
        row["progress"] = round(min(100.0, row["records_processed"] / row["total_records"] * 100.0), 4)
    elif event.kind == "start":
        row["progress"] = 0.0 if row["total_records"] else None


# -- the shapes -------------------------------------------------------------------------------------


def _payload(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Malformed("the data is not an object")
    return data


def _number(value: Any, what: str) -> float:
    if type(value) is float and math.isfinite(value):  # the common case first
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise Malformed(f"{what} is not finite")
    return number


def _count(value: Any, what: str, limit: int = INT8_MAX) -> int | None:
    """A non-negative whole number, or None when absent."""
    if value is None:
        return None
    if type(value) is int and 0 <= value <= limit:  # the common case first
        return value
    number = _number(value, what)
    if number < 0 or number > limit or not number.is_integer():
        raise Malformed(f"{what} is not a count")
    return int(number)


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise Malformed("text expected")
    text = str(value).strip()
    return text[:limit] if text else None


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"{what} is required")
    return value.strip()[:MAX_NAME]


def _progress(self: Interpretation, run: Run, data: Any, at: datetime) -> None:
    body = _payload(data)
    percentage = max(0.0, min(100.0, _number(body.get("percentage"), "percentage")))
    message = _text(body.get("message"), 10_000)
    values = self.progress.setdefault(run.id, {})
    values["progress"] = percentage
    if message is not None:
        values["current_activity"] = {"operation": message}


def _stage(kind: str) -> Callable[[Interpretation, Run, Any, datetime], None]:
    def handle(self: Interpretation, run: Run, data: Any, at: datetime) -> None:
        body = _payload(data)
        status = None
        if kind == "end":
            word = body.get("status", STAGE_COMPLETED)
            if not isinstance(word, str) or word.strip().lower() not in ("completed", "failed"):
                raise Malformed("status is Completed or Failed")
            status = STAGE_COMPLETED if word.strip().lower() == "completed" else STAGE_FAILED
        error = _text(body.get("error"), MAX_ERROR) if kind == "end" else None
        self.stages.append(_StageEvent(
            kind=kind, run_id=run.id, stage=_name(body.get("stage"), "stage"), at=at,
            order=_count(body.get("order"), "order", INT4_MAX),
            total=_count(body.get("totalRecords"), "totalRecords"),
            processed=_count(body.get("recordsProcessed"), "recordsProcessed"), status=status, error=error))

    return handle


def _log(self: Interpretation, run: Run, data: Any, at: datetime) -> None:
    body = _payload(data)
    message = body.get("message")
    if message is None or isinstance(message, dict | list):
        raise Malformed("message is required")
    details = body.get("details")
    if details is not None and not isinstance(details, dict):
        details = {"value": details}
    self.logs.append((
        run.id, run.attempt, at, level_of(body.get("level")),
        "sdk", str(message), _text(body.get("component"), MAX_NAME), _text(body.get("stage"), MAX_NAME),
        details or None,
    ))


def _metric(self: Interpretation, run: Run, data: Any, at: datetime) -> None:
    body = _payload(data)
    self.samples.append((run.id, _name(body.get("name"), "name"), _number(body.get("value"), "value"),
                         _text(body.get("unit"), MAX_UNIT), "task", at))


_HANDLERS: dict[str, Callable[[Interpretation, Run, Any, datetime], None]] = {
    "progress": _progress,
    "stage_start": _stage("start"),
    "stage_progress": _stage("progress"),
    "stage_end": _stage("end"),
    "log": _log,
    "metric": _metric,
}
