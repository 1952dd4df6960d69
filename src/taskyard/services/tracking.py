"""Tracking events (spec 1): code inside or outside taskyard reports events against a run id string.

A `runId` is the decimal id or the uuid of a taskyard run (workers put it in TASKYARD_RUN_ID), or an
id that outside code chose: such a run appears on its first event, under a task named `functionName`
(created with task_type "external" when missing). Only these external runs are moved by `start`, `end`
and `error` events; taskyard's own runs belong to their worker, and events never change their status.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.errors import NotFound, ValidationFailed
from taskyard.domain.models import Run
from taskyard.domain.status import Priority, RunStatus, TaskStatus, TriggerKind
from taskyard.services.lifecycle import RunLifecycle
from taskyard.services.tracking_ingest import Interpretation
from taskyard.services.tracking_lines import TrackingLog, TrackingSample, check_log, check_sample, log_row, sample_row
from taskyard.storage import events as event_rows
from taskyard.storage import runs as run_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage import tracking as tracking_rows
from taskyard.storage.tables import DEFAULT_PROJECT_ID

if TYPE_CHECKING:
    from taskyard.services.core import Core

EXTERNAL_TASK_TYPE = "external"
EXTERNAL_COMMAND = "(external)"
MAX_TEXT = 255
MAX_BATCH = 10_000
MAX_LIST = 10_000
MOVING_EVENTS = frozenset({"end", "error"})  # what moves an external run ("start": it is born running)

# The design table: every status not final reads RUNNING.
TRACKING_STATUS = {
    RunStatus.PENDING: "RUNNING", RunStatus.QUEUED: "RUNNING", RunStatus.RUNNING: "RUNNING",
    RunStatus.COMPLETED: "SUCCESS", RunStatus.FAILED: "FAILURE", RunStatus.ABORTED: "FAILURE",
}


@dataclass(slots=True)  # not frozen: built ten thousand at a time, and frozen __init__ is slow
class TrackingEvent:
    run_id: str
    function_name: str
    event_name: str
    data: Any = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class TrackingRun:
    id: int
    run_id: str
    function_name: str
    start_time: datetime
    status: str


@dataclass(frozen=True)
class StoredEvent:
    id: int | None  # None: synthesised from the run's history, not stored
    run_id: str
    function_name: str
    event_name: str
    data: Any
    timestamp: datetime


def tracking_run_id(run: Run) -> str:
    return run.external_id if run.external_id is not None else str(run.id)


class TrackingService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def record(self, events: Sequence[TrackingEvent], *, logs: Sequence[TrackingLog] = (),
                     samples: Sequence[TrackingSample] = (), project_id: int = DEFAULT_PROJECT_ID) -> int:
        """Store events, log lines and samples in one transaction; returns how many items were stored.
        In the same transaction, progress, stage, log and metric events also land in their tables (see
        tracking_ingest). Logs and samples name runs that exist (a 404 otherwise)."""
        for what, items in (("events", events), ("logs", logs), ("samples", samples)):
            if len(items) > MAX_BATCH:
                raise ValidationFailed(f"at most {MAX_BATCH} {what} per call", field=what, rule="max_items",
                                       value=len(items))
        for index, event in enumerate(events):
            _check(event, index if len(events) > 1 else None)
        for index, log in enumerate(logs):
            check_log(log, index)
        for index, sample in enumerate(samples):
            check_sample(sample, index)
        if not (events or logs or samples):
            return 0
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            known: dict[str, Run] = {}
            rows: list[tuple[Any, ...]] = []
            meaning = Interpretation()
            for event in events:
                at = _utc(event.timestamp) or now
                run = known.get(event.run_id)
                if run is None:
                    run = await self._resolve(conn, event, project_id, at=at, now=now)
                    known[event.run_id] = run
                if event.event_name in MOVING_EVENTS and run.trigger is TriggerKind.EXTERNAL:
                    run = known[event.run_id] = await self._apply(conn, lifecycle, run, event, at=at, now=now)
                rows.append((run.id, project_id, event.event_name, event.data, at))
                meaning.add(run, event.event_name, event.data, at)
            for log in logs:
                run = known.get(log.run_id) or await self._existing(conn, known, log.run_id, project_id)
                meaning.logs.append(log_row(run, log, _utc(log.timestamp) or now))
            for sample in samples:
                run = known.get(sample.run_id) or await self._existing(conn, known, sample.run_id, project_id)
                meaning.samples.append(sample_row(run, sample, _utc(sample.timestamp) or now))
            await tracking_rows.insert_events(conn, rows)
            await meaning.apply(conn, now=now)
        self.core.publish(lifecycle)
        return len(events) + len(logs) + len(samples)

    async def _existing(self, conn: AsyncConnection, known: dict[str, Run], run_id: str, project_id: int) -> Run:
        run = await self._find(conn, run_id, project_id)
        if run is None:
            raise NotFound(f"no run with runId '{run_id}'", resource="run", id=run_id)
        known[run_id] = run
        return run

    async def list_runs(self, *, limit: int = 1000, offset: int = 0,
                        project_id: int = DEFAULT_PROJECT_ID) -> list[TrackingRun]:
        async with self.core.db.read() as conn:
            rows = await event_rows.list_runs(conn, project_id, limit=limit, offset=offset)
        return [TrackingRun(id=int(r["id"]), run_id=r["external_id"] or str(r["id"]), function_name=r["task_name"],
                            start_time=r["started_at"] or r["created_at"],
                            status=TRACKING_STATUS[RunStatus(r["status"])]) for r in rows]

    async def events_of(self, run_id: str, *, limit: int = MAX_LIST,
                        project_id: int = DEFAULT_PROJECT_ID) -> list[StoredEvent]:
        """The run's stored events; for taskyard's own runs, merged with lifecycle events from its history."""
        async with self.core.db.read() as conn:
            run = await self._find(conn, run_id, project_id)
            if run is None:
                raise NotFound(f"no run with runId '{run_id}'", resource="run", id=run_id)
            stored = await event_rows.list_events(conn, run.id, limit=limit)
            history = [] if run.trigger is TriggerKind.EXTERNAL else await run_rows.history(conn, run.id)
        name = tracking_run_id(run)
        events = [StoredEvent(int(r["id"]), name, run.task_name, r["name"], r["data"], r["timestamp"])
                  for r in stored]
        if not history:
            return events
        return _merge(events, _lifecycle_events(run, name, history))

    async def _find(self, conn: AsyncConnection, run_id: str, project_id: int) -> Run | None:
        # A worker's TASKYARD_RUN_ID is the decimal id; the uuid names the same run.
        if run_id.isascii() and run_id.isdecimal() and len(run_id) <= 18:
            run = await event_rows.run_by_id(conn, project_id, int(run_id))
            if run is not None:
                return run
        elif len(run_id) == 36 and _is_uuid(run_id):
            run = await event_rows.run_by_uuid(conn, project_id, run_id.lower())
            if run is not None:
                return run
        return await event_rows.run_by_external_id(conn, project_id, run_id)

    async def _resolve(self, conn: AsyncConnection, event: TrackingEvent, project_id: int, *, at: datetime,
                       now: datetime) -> Run:
        """The run an event names; an unknown runId makes an external run, found or created at once."""
        run = await self._find(conn, event.run_id, project_id)
        if run is not None:
            return run
        task_id = await self._external_task(conn, event.function_name, project_id, now=now)
        task = await task_rows.get_task(conn, task_id)
        assert task is not None
        values = {
            "uuid": str(uuid.uuid4()), "project_id": project_id, "task_id": task.id, "task_name": task.name,
            # Always "external" on the run, whatever the task: no worker ever registers for this type.
            "task_type": EXTERNAL_TASK_TYPE, "status": RunStatus.RUNNING, "priority": Priority.NORMAL,
            "priority_rank": Priority.NORMAL.rank, "external_id": event.run_id, "parameters": {},
            "timeout_seconds": task.timeout_seconds, "max_retries": 0, "retry_count": 0, "attempt": 1,
            "trigger": TriggerKind.EXTERNAL, "available_at": now, "created_at": now, "updated_at": now,
            "started_at": at,
        }
        created = await event_rows.insert_run_unless_known(conn, values, reason="first tracking event")
        if created is None:  # a concurrent first event of the same runId won
            run = await event_rows.run_by_external_id(conn, project_id, event.run_id)
        else:
            await task_rows.touch_last_run(conn, task.id, now)
            run = await run_rows.get_run(conn, created)
        assert run is not None
        return run

    async def _external_task(self, conn: AsyncConnection, name: str, project_id: int, *, now: datetime) -> int:
        found = await event_rows.live_task_id_by_name(conn, name, project_id)
        if found is not None:
            return found
        values = {
            "uuid": str(uuid.uuid4()), "project_id": project_id, "name": name,
            "description": "created by the first tracking event of code outside taskyard",
            "task_type": EXTERNAL_TASK_TYPE, "executor": EXTERNAL_TASK_TYPE, "command": EXTERNAL_COMMAND,
            "arguments": [], "schedule": None, "priority": Priority.NORMAL, "retry_count": 0,
            "timeout_seconds": 3600, "status": TaskStatus.ACTIVE, "tags": [], "metadata": {},
            "created_at": now, "updated_at": now, "next_run_at": None,
        }
        created = await event_rows.insert_task_unless_named(conn, values)
        if created is None:
            created = await event_rows.live_task_id_by_name(conn, name, project_id)
        assert created is not None
        return created

    async def _apply(self, conn: AsyncConnection, lifecycle: RunLifecycle, run: Run, event: TrackingEvent, *,
                     at: datetime, now: datetime) -> Run:
        """`start`/`end`/`error` move an external run; once final, later events are only stored."""
        if run.status.is_final or event.event_name not in MOVING_EVENTS:
            return run  # "start": external runs are born running
        values: dict[str, Any] = {"completed_at": at}
        if run.started_at is not None:
            values["execution_time"] = max(0.0, round((at - run.started_at).total_seconds(), 6))
        if event.event_name == "end":
            target, reason = RunStatus.COMPLETED, "tracking event 'end'"
        else:
            target = RunStatus.FAILED
            reason = values["error_message"] = _error_message(event.data)
        moved = await lifecycle.move(conn, run, target, now=now, values=values, reason=reason)
        if moved is None:  # moved under us: read it again
            moved = await run_rows.get_run(conn, run.id)
            assert moved is not None
        return moved


def _check(event: TrackingEvent, index: int | None) -> None:
    if _fits(event.run_id) and _fits(event.function_name) and _fits(event.event_name):
        return
    where = f"events[{index}]." if index is not None else ""
    for field, value in (("runId", event.run_id), ("functionName", event.function_name),
                         ("eventName", event.event_name)):
        if not isinstance(value, str) or not value.strip():
            raise ValidationFailed(f"{where}{field} is required and must be a non-empty string", field=field,
                                   rule="required", value=value)
        if len(value) > MAX_TEXT:
            raise ValidationFailed(f"{where}{field} must be at most {MAX_TEXT} characters", field=field,
                                   rule="max_length", value=value[:32] + "...")


def _fits(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT and not value.isspace()


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("message", "error"):
            if data.get(key) not in (None, ""):
                return str(data[key])[:10_000]
    return "tracking event 'error'"


def _lifecycle_events(run: Run, name: str, history: list[dict[str, Any]]) -> list[StoredEvent]:
    """A `start` at every entry into running, and `end` or `error` at the final status."""
    made: list[StoredEvent] = []
    for entry in history:
        status = RunStatus(entry["status"])
        if status is RunStatus.RUNNING:
            data: dict[str, Any] = {"attempt": entry["attempt"], "workerId": entry["worker_id"]}
            made.append(StoredEvent(None, name, run.task_name, "start", data, entry["at"]))
        elif status.is_final:
            data = {"status": status.value}
            if status is not RunStatus.COMPLETED and (entry["reason"] or run.error_message):
                data["message"] = entry["reason"] or run.error_message
            made.append(StoredEvent(None, name, run.task_name, "end" if status is RunStatus.COMPLETED else "error",
                                    data, entry["at"]))
    return made


def _merge(stored: list[StoredEvent], lifecycle: list[StoredEvent]) -> list[StoredEvent]:
    """Keep stored events in id order; slot each lifecycle event in by time (a start before a stored event
    of the same instant, an end after it)."""
    merged: list[StoredEvent] = []
    i = 0
    for made in lifecycle:
        while i < len(stored) and (stored[i].timestamp < made.timestamp or
                                   (made.event_name != "start" and stored[i].timestamp == made.timestamp)):
            merged.append(stored[i])
            i += 1
        merged.append(made)
    merged.extend(stored[i:])
    return merged
