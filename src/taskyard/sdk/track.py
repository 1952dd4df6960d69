"""Report what a task is doing, from inside the task: events, progress, stages, logs, metrics.

    from taskyard import track

    track.event("milestone_1", {"processed_records": 100})
    track.progress(40)
    with track.stage("Data Loading", total=1000) as stage:
        for batch in batches:
            ...
            stage.advance(len(batch))
    track.log("warn", "125 records without timestamps", component="DataValidator")
    track.metric("records_per_second", 1250)

Inside a taskyard run everything is found in the environment the worker sets (TASKYARD_RUN_ID,
TASKYARD_FUNCTION_NAME, TASKYARD_API_URL, TASKYARD_API_KEY). Code running elsewhere names its own run:
`Tracker(run_id="nightly-2026-11-23", function_name="etl", api_url="http://host:8080/api")`.

Calls never raise into the task and never block it: they append to a bounded buffer that a background
thread sends in batches (`POST /api/tracking/batch`). If the server cannot be reached the buffer keeps
the newest items, retries with backoff, and says once on stderr how many it dropped. The buffer is
flushed when the process exits, so a finished run's last events are delivered before the worker
reports it finished.

Only the standard library is imported here: task code pays nothing for using it.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

MAX_BUFFER = 10_000
BATCH = 500
FLUSH_INTERVAL = 0.2
LEVELS = {"debug", "info", "warn", "warning", "error"}


class Tracker:
    def __init__(self, run_id: str | None = None, function_name: str | None = None, api_url: str | None = None,
                 api_key: str | None = None, *, flush_interval: float = FLUSH_INTERVAL,
                 max_buffer: int = MAX_BUFFER) -> None:
        env = os.environ
        self.run_id = run_id or env.get("TASKYARD_RUN_ID")
        self.function_name = function_name or env.get("TASKYARD_FUNCTION_NAME") or _script_name()
        self.api_url = (api_url or env.get("TASKYARD_API_URL") or "http://127.0.0.1:8080/api").rstrip("/")
        if not self.api_url.startswith(("http://", "https://")):
            self.run_id = None  # a URL we must not open: tracking stays off rather than failing the task
        self.api_key = api_key or env.get("TASKYARD_API_KEY")
        self.flush_interval = flush_interval
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffer)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._warned = False
        self._stage_order = 0

    @property
    def enabled(self) -> bool:
        """Outside a run, with no run id given, tracking calls do nothing."""
        return bool(self.run_id)

    # -- what tasks call ------------------------------------------------------------------------------

    def event(self, name: str, data: Any = None) -> None:
        self._add(name, data)

    def progress(self, percent: float, message: str | None = None) -> None:
        self._add("progress", {"percentage": max(0.0, min(100.0, float(percent))), "message": message})

    def log(self, level: str, message: str, *, component: str | None = None, stage: str | None = None,
            details: dict[str, Any] | None = None) -> None:
        word = level.lower() if level.lower() in LEVELS else "info"
        self._add("log", {"level": word, "message": str(message), "component": component, "stage": stage,
                          "details": details or {}})

    def metric(self, name: str, value: float, unit: str | None = None) -> None:
        self._add("metric", {"name": name, "value": value, "unit": unit})

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Stage]:
        self._stage_order += 1
        current = Stage(self, name, self._stage_order, total)
        self._add("stage_start", {"stage": name, "order": current.order, "totalRecords": total})
        try:
            yield current
        except BaseException as exc:
            self._add("stage_end", {"stage": name, "order": current.order, "status": "Failed",
                                    "recordsProcessed": current.done, "error": repr(exc)})
            raise
        self._add("stage_end", {"stage": name, "order": current.order, "status": "Completed",
                                "recordsProcessed": current.done})

    def flush(self, timeout: float = 5.0) -> bool:
        """Send what is buffered; True if everything went out within `timeout`."""
        if not self._buffer:
            return True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._buffer and self._idle.is_set():
                return True
            time.sleep(0.01)
        return not self._buffer

    # -- the buffer and its sender ----------------------------------------------------------------------

    def _add(self, name: str, data: Any) -> None:
        try:
            if not self.enabled:
                return
            item = {"runId": self.run_id, "functionName": self.function_name, "eventName": str(name)[:255],
                    "data": data, "timestamp": datetime.now(UTC).isoformat()}
            with self._lock:
                if len(self._buffer) == self._buffer.maxlen:
                    self._dropped += 1  # the deque drops the oldest
                self._buffer.append(item)
            self._ensure_thread()
        except Exception:  # a tracking call must never break the task
            return

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            first = self._thread is None
            self._thread = threading.Thread(target=self._run, name="taskyard-track", daemon=True)
            self._thread.start()
            if first:
                atexit.register(self.flush)

    def _run(self) -> None:
        backoff = 0.2
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            while self._buffer:
                self._idle.clear()
                with self._lock:
                    batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                if self._send(batch):
                    backoff = 0.2
                    continue
                with self._lock:  # put it back in front, oldest first; the bound still holds
                    for item in reversed(batch):
                        if len(self._buffer) == self._buffer.maxlen:
                            self._dropped += 1
                            break
                        self._buffer.appendleft(item)
                self._idle.set()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            self._idle.set()
            self._report_drops()

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        body = json.dumps({"events": batch}, default=str).encode()
        request = urllib.request.Request(f"{self.api_url}/tracking/batch", data=body,  # noqa: S310 - http(s) only
                                         method="POST", headers={"Content-Type": "application/json"})
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - URL from settings
                return bool(200 <= response.status < 300)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                self._say(f"taskyard: the server refused {len(batch)} tracking events ({exc.code}); dropped")
                return True  # retrying a request the server refuses cannot succeed
            return False
        except (OSError, ValueError):
            return False

    def _report_drops(self) -> None:
        if self._dropped:
            self._say(f"taskyard: dropped {self._dropped} tracking events (the server was unreachable "
                      f"and the buffer holds {self._buffer.maxlen})")
            self._dropped = 0

    def _say(self, message: str) -> None:
        if not self._warned or "dropped" in message:
            self._warned = True
            print(message, file=sys.stderr)


class Stage:
    def __init__(self, tracker: Tracker, name: str, order: int, total: int | None) -> None:
        self.tracker = tracker
        self.name = name
        self.order = order
        self.total = total
        self.done = 0
        self._last_sent = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        # At most a few updates a second: a tight loop calling advance() must stay cheap.
        if now - self._last_sent >= 0.2 or (self.total is not None and self.done >= self.total):
            self._last_sent = now
            self.tracker._add("stage_progress", {"stage": self.name, "order": self.order,
                                                 "recordsProcessed": self.done, "totalRecords": self.total})


def _script_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


_default: Tracker | None = None
_default_lock = threading.Lock()


def default() -> Tracker:
    """The tracker of this process, built from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Tracker()
        return _default


def event(name: str, data: Any = None) -> None:
    default().event(name, data)


def progress(percent: float, message: str | None = None) -> None:
    default().progress(percent, message)


def log(level: str, message: str, *, component: str | None = None, stage: str | None = None,
        details: dict[str, Any] | None = None) -> None:
    default().log(level, message, component=component, stage=stage, details=details)


def metric(name: str, value: float, unit: str | None = None) -> None:
    default().metric(name, value, unit)


def stage(name: str, total: int | None = None) -> Any:
    return default().stage(name, total)


def flush(timeout: float = 5.0) -> bool:
    return default().flush(timeout)
