"""`taskyard track …`: the tracking SDK for shell tasks. Inside a run the worker's environment names the
run; the commands never fail the task (a tracking problem is said on stderr, the exit code stays 0)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from taskyard.sdk.track import Tracker

track_app = typer.Typer(help="Report events, progress, stages, logs and metrics from a shell task.",
                        no_args_is_help=True)

RunOption = Annotated[str | None, typer.Option("--run-id", help="Run to report on (env TASKYARD_RUN_ID)")]
FlushTimeout = 5.0


def _json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{what} is not valid JSON: {exc.msg}") from exc


def _send(tracker: Tracker) -> None:
    if not tracker.enabled:
        typer.echo("taskyard track: no run (set TASKYARD_RUN_ID or pass --run-id); nothing sent", err=True)
        return
    if not tracker.flush(FlushTimeout):
        typer.echo("taskyard track: the server did not take the event in time; dropped", err=True)


@track_app.command("event")
def track_event(name: str, data: Annotated[str | None, typer.Option(help="JSON data")] = None,
                run_id: RunOption = None) -> None:
    """Record an event (start, end, error, milestone_1 …)."""
    tracker = Tracker(run_id=run_id)
    tracker.event(name, _json(data, "--data"))
    _send(tracker)


@track_app.command("progress")
def track_progress(percent: float, message: Annotated[str | None, typer.Option()] = None,
                   run_id: RunOption = None) -> None:
    """Report overall progress in percent."""
    tracker = Tracker(run_id=run_id)
    tracker.progress(percent, message)
    _send(tracker)


@track_app.command("log")
def track_log(level: str, message: str, component: Annotated[str | None, typer.Option()] = None,
              stage: Annotated[str | None, typer.Option()] = None,
              details: Annotated[str | None, typer.Option(help="JSON object")] = None,
              run_id: RunOption = None) -> None:
    """Write a structured log line (debug, info, warn, error)."""
    tracker = Tracker(run_id=run_id)
    tracker.log(level, message, component=component, stage=stage, details=_json(details, "--details"))
    _send(tracker)


@track_app.command("metric")
def track_metric(name: str, value: float, unit: Annotated[str | None, typer.Option()] = None,
                 run_id: RunOption = None) -> None:
    """Record a metric sample."""
    tracker = Tracker(run_id=run_id)
    tracker.metric(name, value, unit)
    _send(tracker)


@track_app.command("stage")
def track_stage(name: str,
                status: Annotated[str, typer.Option(help="start, progress or end")] = "start",
                done: Annotated[int | None, typer.Option(help="records processed so far")] = None,
                total: Annotated[int | None, typer.Option(help="records in the stage")] = None,
                order: Annotated[int | None, typer.Option(help="position of the stage")] = None,
                run_id: RunOption = None) -> None:
    """Mark a stage's start, progress or end."""
    events = {"start": "stage_start", "progress": "stage_progress", "end": "stage_end"}
    if status not in events:
        raise typer.BadParameter("--status must be start, progress or end")
    tracker = Tracker(run_id=run_id)
    data: dict[str, Any] = {"stage": name, "order": order, "totalRecords": total, "recordsProcessed": done}
    if status == "end":
        data["status"] = "Completed"
    tracker.event(events[status], data)
    _send(tracker)
