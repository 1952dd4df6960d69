"""The tracking SDK: buffered, batched, never raising into the task."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from taskyard.sdk.track import Tracker


class _Collector(BaseHTTPRequestHandler):
    batches: list[list[dict[str, Any]]]
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).batches.append(body["events"])
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def server() -> Any:
    handler = type("Handler", (_Collector,), {"batches": [], "status": 200})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/api"
    httpd.shutdown()


def test_calls_are_batched_and_flushed(server: Any) -> None:
    handler, url = server
    tracker = Tracker(run_id="r-1", function_name="etl", api_url=url)
    for i in range(1200):
        tracker.event("tick", {"i": i})
    tracker.progress(50)
    with tracker.stage("Load", total=10) as stage:
        stage.advance(10)
    tracker.log("WARN", "careful", component="Loader", details={"n": 1})
    tracker.metric("rate", 12.5, "records/s")
    assert tracker.flush(10)
    events = [e for batch in handler.batches for e in batch]
    assert len(events) == 1200 + 1 + 3 + 1 + 1  # stage: start, one progress update, end
    assert len(handler.batches) < 20
    assert [e["data"]["i"] for e in events if e["eventName"] == "tick"] == list(range(1200))
    assert {e["runId"] for e in events} == {"r-1"} and {e["functionName"] for e in events} == {"etl"}
    log = next(e for e in events if e["eventName"] == "log")
    assert log["data"] == {"level": "warn", "message": "careful", "component": "Loader", "stage": None,
                           "details": {"n": 1}}


def test_unreachable_server_never_raises_and_drops_the_oldest(capsys: pytest.CaptureFixture[str]) -> None:
    tracker = Tracker(run_id="r-2", function_name="etl", api_url="http://127.0.0.1:9/api", max_buffer=100)
    started = time.monotonic()
    for i in range(1000):
        tracker.event("tick", {"i": i})
    assert time.monotonic() - started < 1.0  # never blocks the task
    assert tracker.flush(0.5) is False
    time.sleep(0.5)
    assert len(tracker._buffer) <= 100
    kept = [e["data"]["i"] for e in tracker._buffer]
    assert kept[-1] == 999  # the newest are kept


def test_outside_a_run_tracking_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKYARD_RUN_ID", raising=False)
    tracker = Tracker()
    tracker.event("x")
    assert not tracker.enabled and len(tracker._buffer) == 0


def test_run_found_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: Any) -> None:
    handler, url = server
    monkeypatch.setenv("TASKYARD_RUN_ID", "42")
    monkeypatch.setenv("TASKYARD_FUNCTION_NAME", "nightly")
    monkeypatch.setenv("TASKYARD_API_URL", url)
    tracker = Tracker()
    tracker.event("milestone_1", {"processed_records": 100})
    assert tracker.flush(5)
    assert handler.batches[0][0]["runId"] == "42"
    assert handler.batches[0][0]["functionName"] == "nightly"


def test_a_refused_batch_is_dropped_not_retried_forever(server: Any) -> None:
    handler, url = server
    handler.status = 400
    tracker = Tracker(run_id="r-3", function_name="etl", api_url=url)
    tracker.event("bad")
    assert tracker.flush(5)
    assert len(handler.batches) == 1
