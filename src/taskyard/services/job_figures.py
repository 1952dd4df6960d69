"""Pure figures of the job tracking read model (spec 5): status words, ETAs, rates, and the human
spellings the spec uses ("15 minutes 33 seconds", "2.3 GB", "1250 records/second")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from taskyard.domain.models import Run
from taskyard.domain.status import RunStatus

JOB_STATUS = {
    RunStatus.PENDING: "Queued", RunStatus.QUEUED: "Queued", RunStatus.RUNNING: "Running",
    RunStatus.COMPLETED: "Completed", RunStatus.FAILED: "Failed", RunStatus.ABORTED: "Cancelled",
}
# The batch filter's words back to canonical statuses.
STATUS_FILTER = {
    "running": [RunStatus.RUNNING], "queued": [RunStatus.PENDING, RunStatus.QUEUED],
    "completed": [RunStatus.COMPLETED], "failed": [RunStatus.FAILED], "cancelled": [RunStatus.ABORTED],
}
STAGE_STATUS = {"pending": "Pending", "queued": "Pending", "running": "Running", "started": "Running",
                "completed": "Completed", "succeeded": "Completed", "success": "Completed", "failed": "Failed",
                "error": "Failed", "skipped": "Skipped", "cancelled": "Cancelled", "aborted": "Cancelled"}


def job_status(run: Run) -> str:
    return JOB_STATUS[run.status]


def stage_status(stored: str | None) -> str:
    word = (stored or "").lower()
    return STAGE_STATUS.get(word, word.capitalize() or "Pending")


# -- spellings ---------------------------------------------------------------------------------------------

def instant_text(value: datetime) -> str:
    """Spec 5's instants: UTC to the second with a Z ("2024-01-20T10:30:15Z")."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def duration_text(seconds: float | None) -> str | None:
    """"15 minutes 33 seconds", "2 hours 5 minutes", "0 seconds"; None stays None."""
    if seconds is None:
        return None
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return " ".join([_plural(hours, "hour")] + ([_plural(minutes, "minute")] if minutes else []))
    if minutes:
        return " ".join([_plural(minutes, "minute")] + ([_plural(secs, "second")] if secs else []))
    return _plural(secs, "second")


def minutes_text(seconds: float | None) -> str | None:
    """"5.75 minutes", as the spec's averages read."""
    return None if seconds is None else f"{round(seconds / 60, 2):g} minutes"


def size_text(megabytes: float | None) -> str | None:
    if megabytes is None:
        return None
    if megabytes >= 1024:
        return f"{megabytes / 1024:.1f} GB"
    if megabytes >= 1:
        return f"{round(megabytes)} MB"
    return f"{round(megabytes * 1024)} KB"


def bytes_text(count: float | None) -> str | None:
    return None if count is None else size_text(count / (1024 * 1024))


def rate_text(per_second: float | None) -> str | None:
    return None if per_second is None else f"{round(per_second)} records/second"


def number(value: float | None, digits: int = 1) -> float | int | None:
    """A figure rounded for display; whole numbers as ints."""
    if value is None:
        return None
    rounded = round(value, digits)
    return int(rounded) if rounded == int(rounded) else rounded


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# -- time and rate ----------------------------------------------------------------------------------------------

def elapsed(run: Run, now: datetime) -> float | None:
    if run.started_at is None:
        return None
    end = run.completed_at if run.status.is_final and run.completed_at is not None else now
    return max(0.0, (end - run.started_at).total_seconds())


def percentage(run: Run) -> float | None:
    if run.status is RunStatus.COMPLETED:
        return 100.0
    return run.progress


def remaining_seconds(run: Run, now: datetime) -> float | None:
    """From the observed rate: elapsed * (100 - p) / p. None unless running with 0 < p."""
    spent, pct = elapsed(run, now), percentage(run)
    if run.status is not RunStatus.RUNNING or spent is None or not pct or pct <= 0:
        return None
    return spent * (100.0 - min(pct, 100.0)) / pct


def job_eta(run: Run, now: datetime) -> datetime | None:
    if run.status.is_final:
        return run.completed_at
    left = remaining_seconds(run, now)
    return None if left is None else now + timedelta(seconds=left)


def stage_seconds(stage: dict[str, Any], now: datetime) -> float | None:
    start = stage.get("started_at")
    if start is None:
        return None
    end: datetime = stage.get("ended_at") or now
    return max(0.0, float((end - start).total_seconds()))


def stage_rate(stage: dict[str, Any], now: datetime) -> float | None:
    """Records per second over the stage's life so far."""
    spent, done = stage_seconds(stage, now), stage.get("records_processed")
    if not spent or done is None:
        return None
    return float(done) / spent


def stage_eta(stage: dict[str, Any], now: datetime) -> datetime | None:
    """A running stage's end: from its progress rate, else from its record rate and total."""
    if stage_status(stage.get("status")) != "Running":
        return None
    spent = stage_seconds(stage, now)
    if spent is None:
        return None
    progress = stage.get("progress")
    if progress is None and stage.get("total_records") and stage.get("records_processed") is not None:
        progress = 100.0 * stage["records_processed"] / stage["total_records"]
    if not progress or progress <= 0:
        return None
    return now + timedelta(seconds=spent * (100.0 - min(progress, 100.0)) / progress)


def current_stage(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The running stage that started last; else None."""
    running = [s for s in stages if stage_status(s.get("status")) == "Running"]
    if not running:
        return None
    return max(running, key=lambda s: (s.get("started_at") is not None, s.get("started_at") or s["updated_at"],
                                       s["stage_order"]))


def latest_stage(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The current stage, else the last one that started (a finished run's last stage)."""
    found = current_stage(stages)
    if found is not None:
        return found
    started = [s for s in stages if s.get("started_at") is not None]
    return max(started, key=lambda s: (s["started_at"], s["stage_order"])) if started else None


def trend(first: list[float], second: list[float], *, higher_is_better: bool) -> str | None:
    """Stable within ±10 % of the first half's mean; None with too little history."""
    if not first or not second:
        return None
    before, after = sum(first) / len(first), sum(second) / len(second)
    base = abs(before) or 1e-9
    change = (after - before) / base
    if abs(change) <= 0.10:
        return "Stable"
    return "Improving" if (change > 0) == higher_is_better else "Declining"


RATE_METRICS = ("records_per_second", "recordsPerSecond", "processing_rate", "processingRate")


def task_figure(task: dict[str, float], *names: str) -> float | int | None:
    for name in names:
        if name in task:
            return number(task[name], 3)
    return None


def processing_rate(stages: list[dict[str, Any]], task: dict[str, float], now: datetime) -> float | None:
    """The current stage's record rate; else the newest rate the task reported as a metric."""
    stage = current_stage(stages)
    rate = stage_rate(stage, now) if stage else None
    if rate is not None:
        return rate
    value = task_figure(task, *RATE_METRICS)
    return None if value is None else float(value)


def stage_progress(stage: dict[str, Any]) -> float | None:
    if stage.get("progress") is not None:
        return float(stage["progress"])
    if stage_status(stage.get("status")) == "Completed":
        return 100.0
    if stage.get("total_records") and stage.get("records_processed") is not None:
        return 100.0 * float(stage["records_processed"]) / float(stage["total_records"])
    return None
