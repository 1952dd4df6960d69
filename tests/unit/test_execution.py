"""Executors against real subprocesses and a real local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil
import pytest

from taskyard.worker import pyfunc
from taskyard.worker.executors import (
    SUPPORTED_TASK_TYPES,
    ExecutionResult,
    ExecutionSpec,
    HttpExecutor,
    LogLine,
    Outcome,
    executor_for,
)
from taskyard.worker.executors.base import LOG_MESSAGE_LIMIT, RESULT_LIMIT

UNIT_DIR = Path(__file__).resolve().parent

# The run's process group id (field 5 of /proc/PID/stat): the shell is not the group leader, the
# run's guard is.
PRINT_PGID = "echo $(cut -d' ' -f5 /proc/$$/stat)"


def make_spec(
    task_type: str,
    command: str,
    *,
    arguments: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    workdir: str | Path | None = None,
) -> ExecutionSpec:
    return ExecutionSpec(
        run_id=42,
        task_type=task_type,
        command=command,
        arguments=arguments or [],
        parameters=parameters or {},
        metadata=metadata or {},
        timeout_seconds=timeout,
        env={"TASKYARD_RUN_ID": "42", **(env or {})},
        workdir=str(workdir) if workdir is not None else None,
    )


class Collector:
    def __init__(self) -> None:
        self.batches: list[list[LogLine]] = []

    async def __call__(self, batch: list[LogLine]) -> None:
        self.batches.append(list(batch))

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]

    def messages(self, stream: str) -> list[str]:
        return [line.message for line in self.lines if line.stream == stream]


async def run(
    spec: ExecutionSpec,
    sink: Any = None,
    abort: asyncio.Event | None = None,
    **executor_options: Any,
) -> tuple[ExecutionResult, Collector]:
    collector = sink if isinstance(sink, Collector) else Collector()
    executor = executor_for(spec.task_type, **executor_options)
    result = await executor.run(spec, sink or collector, abort or asyncio.Event())
    return result, collector


# -- process helpers --------------------------------------------------------------------------------


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def is_gone(proc: psutil.Process) -> bool:
    # Orphans are re-parented to PID 1, which may never reap them here; a zombie is dead.
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def first_stdout_line(collector: Collector) -> str:
    await wait_until(lambda: collector.messages("stdout"), 5, "first stdout line")
    return collector.messages("stdout")[0]


async def members_of(pgid: int, at_least: int) -> list[psutil.Process]:
    found: list[psutil.Process] = []

    def enough() -> bool:
        nonlocal found
        found = group_members(pgid)
        return len(found) >= at_least

    await wait_until(enough, 5, f"{at_least} processes in group {pgid}")
    return found


async def assert_all_gone(procs: list[psutil.Process]) -> None:
    await wait_until(lambda: all(is_gone(p) for p in procs), 3, "run processes to disappear")


# -- executor_for ----------------------------------------------------------------------------------


def test_executor_for_known_and_unknown_types() -> None:
    assert SUPPORTED_TASK_TYPES == ("shell", "python", "http")
    for task_type in SUPPORTED_TASK_TYPES:
        assert hasattr(executor_for(task_type), "run")
    with pytest.raises(ValueError, match="unsupported task type 'docker'"):
        executor_for("docker")
    with pytest.raises(KeyError):
        executor_for("docker")


# -- shell -----------------------------------------------------------------------------------------


async def test_shell_arguments_are_quoted_literally(tmp_path: Path) -> None:
    args = ["hello world", "$HOME", "a'b; echo injected", "*"]
    result, logs = await run(make_spec("shell", "printf '%s\\n'", arguments=args, workdir=tmp_path))
    assert result == ExecutionResult(Outcome.COMPLETED, "*", None, 0)
    assert logs.messages("stdout") == args


async def test_shell_streams_become_info_and_error_lines_in_order() -> None:
    command = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; echo out3"
    result, logs = await run(make_spec("shell", command))
    assert result.outcome is Outcome.COMPLETED
    assert result.result == "out3"
    stdout = [line for line in logs.lines if line.stream == "stdout"]
    stderr = [line for line in logs.lines if line.stream == "stderr"]
    assert [line.message for line in stdout] == ["out1", "out2", "out3"]
    assert [line.message for line in stderr] == ["err1", "err2"]
    assert {line.level for line in stdout} == {"info"}
    assert {line.level for line in stderr} == {"error"}
    assert all(line.timestamp.tzinfo is UTC for line in logs.lines)


async def test_shell_environment_and_workdir(tmp_path: Path) -> None:
    command = 'echo "$TASKYARD_RUN_ID $EXTRA $PYTHONUNBUFFERED"; pwd'
    spec = make_spec("shell", command, env={"EXTRA": "x"}, workdir=tmp_path)
    result, logs = await run(spec)
    assert result.outcome is Outcome.COMPLETED
    assert logs.messages("stdout") == ["42 x 1", str(tmp_path)]


async def test_shell_nonzero_exit_fails_with_exit_code() -> None:
    result, logs = await run(make_spec("shell", "echo partial; echo oops >&2; exit 3"))
    assert result == ExecutionResult(Outcome.FAILED, "partial", "exit code 3", 3)
    assert logs.messages("stderr") == ["oops"]


async def test_shell_killed_by_signal(tmp_path: Path) -> None:
    result, _ = await run(make_spec("shell", "ulimit -c 0; kill -SEGV $$", workdir=tmp_path))
    assert result.outcome is Outcome.FAILED
    assert result.error_message == "killed by signal SIGSEGV"
    assert result.exit_code == -11


async def test_missing_workdir_fails_cleanly(tmp_path: Path) -> None:
    result, logs = await run(make_spec("shell", "echo hi", workdir=tmp_path / "nope"))
    assert result.outcome is Outcome.FAILED
    assert result.error_message is not None and "working directory" in result.error_message
    assert logs.messages("system") == [result.error_message]


async def test_timeout_kills_the_whole_process_tree() -> None:
    # A backgrounded grandchild plus a nested shell with its own child, all blocking.
    command = f"{PRINT_PGID}; sleep 1000 & sh -c 'sleep 1000; echo never'; echo unreachable"
    logs = Collector()
    started = time.monotonic()
    task = asyncio.create_task(
        executor_for("shell").run(make_spec("shell", command, timeout=2), logs, asyncio.Event())
    )
    pgid = int(await first_stdout_line(logs))
    members = await members_of(pgid, at_least=4)
    assert {p.name() for p in members} >= {"sleep"}

    result = await task
    assert result.outcome is Outcome.TIMED_OUT
    assert result.error_message == "timed out after 2s (process group killed)"
    assert time.monotonic() - started < 8
    await assert_all_gone(members)
    assert group_members(pgid) == []
    system = logs.messages("system")
    assert any("timed out after 2s" in m and "SIGTERM" in m for m in system)
    assert "unreachable" not in logs.messages("stdout")


async def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    # SIG_IGN survives exec, so the sleeps ignore SIGTERM as well.
    command = f"trap '' TERM; {PRINT_PGID}; sleep 1000 & sleep 1000"
    logs = Collector()
    executor = executor_for("shell", kill_grace_seconds=0.5)
    task = asyncio.create_task(executor.run(make_spec("shell", command, timeout=1), logs, asyncio.Event()))
    pgid = int(await first_stdout_line(logs))
    members = await members_of(pgid, at_least=3)

    result = await task
    assert result.outcome is Outcome.TIMED_OUT
    await assert_all_gone(members)
    assert any("SIGKILL" in m and "still running" in m for m in logs.messages("system"))


async def test_abort_stops_the_run_quickly() -> None:
    logs = Collector()
    abort = asyncio.Event()
    task = asyncio.create_task(
        executor_for("shell").run(make_spec("shell", f"{PRINT_PGID}; sleep 30 & sleep 30"), logs, abort)
    )
    pgid = int(await first_stdout_line(logs))
    members = await members_of(pgid, at_least=3)

    aborted_at = time.monotonic()
    abort.set()
    result = await asyncio.wait_for(task, timeout=5)
    assert time.monotonic() - aborted_at < 2
    assert result.outcome is Outcome.ABORTED
    assert result.error_message == "aborted"
    await assert_all_gone(members)
    assert any("abort requested" in m for m in logs.messages("system"))


async def test_abort_before_start_runs_nothing(tmp_path: Path) -> None:
    abort = asyncio.Event()
    abort.set()
    marker = tmp_path / "ran"
    result, _ = await run(make_spec("shell", f"touch {marker}"), abort=abort)
    assert result.outcome is Outcome.ABORTED
    assert not marker.exists()


async def test_background_leftovers_are_killed_after_normal_exit() -> None:
    started = time.monotonic()
    result, logs = await run(make_spec("shell", "sleep 1000 & echo $!"))
    assert result.outcome is Outcome.COMPLETED
    assert result.result is not None
    leftover = int(result.result)
    assert time.monotonic() - started < 5
    await wait_until(lambda: not psutil.pid_exists(leftover) or is_gone(psutil.Process(leftover)), 3, "gone")
    assert any("left processes running" in m for m in logs.messages("system"))


async def test_output_is_batched_and_complete() -> None:
    result, logs = await run(make_spec("shell", "seq 1 1000"))
    assert result.outcome is Outcome.COMPLETED
    assert logs.messages("stdout") == [str(i) for i in range(1, 1001)]
    assert len(logs.batches) < 1000
    assert max(len(batch) for batch in logs.batches) <= 200


async def test_very_long_lines_are_truncated_not_fatal(tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text("import sys\nsys.stdout.write('x' * 200_000 + '\\n' + 'é' * 100_000)\n")
    result, logs = await run(make_spec("python", str(script)))
    assert result.outcome is Outcome.COMPLETED
    first, second = logs.messages("stdout")
    assert first.startswith("xxxx") and first.endswith("[truncated]")
    assert len(first.encode()) <= LOG_MESSAGE_LIMIT
    assert len(second.encode()) <= LOG_MESSAGE_LIMIT
    assert result.result is not None
    assert set(result.result) == {"é"}
    assert len(result.result.encode()) <= RESULT_LIMIT
    assert len(result.result.encode()) >= RESULT_LIMIT - 1


async def test_raising_sink_does_not_break_the_run() -> None:
    calls = 0

    async def broken_sink(batch: list[LogLine]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("log endpoint down")

    result, _ = await run(make_spec("shell", "echo one; echo two >&2; echo three"), sink=broken_sink)
    assert result == ExecutionResult(Outcome.COMPLETED, "three", None, 0)
    assert calls >= 1


async def test_sink_recovers_after_a_failure() -> None:
    delivered: list[str] = []
    failed = False

    async def flaky_sink(batch: list[LogLine]) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise ConnectionError("blip")
        delivered.extend(line.message for line in batch)

    result, _ = await run(make_spec("shell", "echo first; sleep 0.5; echo second"), sink=flaky_sink)
    assert result.outcome is Outcome.COMPLETED
    assert delivered == ["second"]


# -- python ----------------------------------------------------------------------------------------


async def test_python_script_with_arguments(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            print("args:", sys.argv[1:])
            print("error text", file=sys.stderr)
            print(json.dumps({"argv": sys.argv[1:], "run": os.environ["TASKYARD_RUN_ID"]}))
            """
        )
    )
    result, logs = await run(make_spec("python", "job.py", arguments=["a b", "$HOME"], workdir=tmp_path))
    assert result.outcome is Outcome.COMPLETED
    assert result.result is not None
    assert json.loads(result.result) == {"argv": ["a b", "$HOME"], "run": "42"}
    assert logs.messages("stderr") == ["error text"]


async def test_python_script_failure_reports_the_exception(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("raise SystemExit('fatal: bad config')\n")
    result, _ = await run(make_spec("python", str(script)))
    assert result.outcome is Outcome.FAILED
    assert result.error_message == "fatal: bad config (exit code 1)"


async def test_missing_python_script_fails_without_raising(tmp_path: Path) -> None:
    result, logs = await run(make_spec("python", "does_not_exist.py", workdir=tmp_path))
    assert result == ExecutionResult(Outcome.FAILED, None, "python script not found: does_not_exist.py", None)
    assert logs.messages("system") == [result.error_message]


async def test_python_function_gets_parameters_as_kwargs() -> None:
    spec = make_spec(
        "python",
        "fixtures_pkg.funcs:add",
        env={"TASKYARD_PARAMS": json.dumps({"a": 2, "b": 3})},
        workdir=UNIT_DIR,
    )
    result, logs = await run(spec)
    assert result.outcome is Outcome.COMPLETED, logs.lines
    assert result.result is not None
    assert json.loads(result.result) == {"sum": 5, "when": "2024-01-02"}
    assert logs.messages("stdout") == ["adding 2 and 3"]


async def test_python_function_positional_arguments_and_async() -> None:
    spec = make_spec(
        "python",
        "fixtures_pkg.funcs:echo_args",
        arguments=["x", "y z"],
        env={"TASKYARD_PARAMS": json.dumps({"k": [1, 2]})},
        workdir=UNIT_DIR,
    )
    result, _ = await run(spec)
    assert result.result is not None
    assert json.loads(result.result) == {"args": ["x", "y z"], "kwargs": {"k": [1, 2]}}

    spec = make_spec(
        "python",
        "fixtures_pkg.funcs:async_double",
        env={"TASKYARD_PARAMS": '{"x": 4}'},
        workdir=UNIT_DIR,
    )
    result, _ = await run(spec)
    assert (result.outcome, result.result) == (Outcome.COMPLETED, "8")


async def test_python_function_raising_fails_with_the_exception() -> None:
    spec = make_spec("python", "fixtures_pkg.funcs:boom", env={"TASKYARD_PARAMS": "{}"}, workdir=UNIT_DIR)
    result, logs = await run(spec)
    assert result.outcome is Outcome.FAILED
    assert result.error_message == "ValueError: kaboom (exit code 1)"
    assert result.exit_code == 1
    errors = logs.messages("stderr")
    assert errors[0].startswith("Traceback")
    assert errors[-1] == "ValueError: kaboom"
    assert logs.messages("stdout") == ["about to fail"]


async def test_python_function_missing_module() -> None:
    spec = make_spec("python", "fixtures_pkg.nope:run", workdir=UNIT_DIR)
    result, _ = await run(spec)
    assert result.outcome is Outcome.FAILED
    assert result.error_message is not None
    assert "No module named 'fixtures_pkg.nope'" in result.error_message


def test_pyfunc_main_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result_file = tmp_path / "result.json"
    monkeypatch.chdir(UNIT_DIR)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("TASKYARD_PARAMS", '{"a": 1, "b": 41}')
    monkeypatch.setenv("TASKYARD_RESULT_FILE", str(result_file))
    assert pyfunc.main(["fixtures_pkg.funcs:add"]) == 0
    assert json.loads(result_file.read_text())["sum"] == 42
    assert pyfunc.main([]) == 2
    assert pyfunc.main(["no_colon_here"]) == 1
    monkeypatch.setenv("TASKYARD_PARAMS", "[1, 2]")
    assert pyfunc.main(["fixtures_pkg.funcs:add"]) == 2


# -- http ------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if parts.path == "/echo":
            payload = {
                "method": self.command,
                "query": parse_qs(parts.query),
                "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            self._reply(200, json.dumps(payload).encode(), "application/json")
        elif parts.path == "/fail":
            self._reply(500, b"something broke\nsee the server log")
        elif parts.path == "/slow":
            time.sleep(5)
            with contextlib.suppress(OSError):
                self._reply(200, b"late")
        else:
            self._reply(404, b"no such page")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_http_get_without_parameters(http_server: str) -> None:
    result, logs = await run(make_spec("http", f"{http_server}/echo"))
    assert result.outcome is Outcome.COMPLETED
    assert result.result is not None
    assert json.loads(result.result)["method"] == "GET"
    assert any("GET " in m and "-> 200 OK" in m for m in logs.messages("stdout"))


async def test_http_get_with_query_parameters(http_server: str) -> None:
    spec = make_spec(
        "http", f"{http_server}/echo?fixed=1", parameters={"q": "a b", "n": 3}, metadata={"method": "GET"}
    )
    result, logs = await run(spec)
    assert result.outcome is Outcome.COMPLETED
    assert result.result is not None
    echoed = json.loads(result.result)
    assert echoed["method"] == "GET"
    assert echoed["query"] == {"fixed": ["1"], "q": ["a b"], "n": ["3"]}
    assert any("-> 200 OK" in m for m in logs.messages("stdout"))


async def test_http_post_sends_parameters_as_json(http_server: str) -> None:
    params = {"name": "nightly", "count": 2, "tags": ["a", "b"]}
    result, _ = await run(make_spec("http", f"{http_server}/echo", parameters=params))
    assert result.outcome is Outcome.COMPLETED
    assert result.result is not None
    echoed = json.loads(result.result)
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == params
    assert echoed["headers"]["content-type"] == "application/json"


async def test_http_metadata_method_headers_and_body(http_server: str) -> None:
    metadata = {"method": "put", "headers": {"X-Token": "abc"}, "body": "raw text"}
    result, _ = await run(
        make_spec("http", f"{http_server}/echo", parameters={"ignored": 1}, metadata=metadata)
    )
    assert result.result is not None
    echoed = json.loads(result.result)
    assert (echoed["method"], echoed["body"], echoed["headers"]["x-token"]) == ("PUT", "raw text", "abc")


async def test_http_bad_metadata_fails_the_run(http_server: str) -> None:
    result, _ = await run(
        make_spec("http", f"{http_server}/echo", metadata={"headers": ["not", "a", "dict"]})
    )
    assert result.outcome is Outcome.FAILED
    assert result.error_message is not None and "'headers' must be an object" in result.error_message


async def test_http_server_error_fails_and_logs_the_body(http_server: str) -> None:
    result, logs = await run(make_spec("http", f"{http_server}/fail"))
    assert result == ExecutionResult(Outcome.FAILED, None, "HTTP 500 Internal Server Error", None)
    assert logs.messages("stderr") == ["something broke", "see the server log"]
    assert all(line.level == "error" for line in logs.lines if line.stream == "stderr")


async def test_http_localhost_name_is_allowed(http_server: str) -> None:
    url = http_server.replace("127.0.0.1", "localhost") + "/echo"
    result, _ = await run(make_spec("http", url))
    assert result.outcome is Outcome.COMPLETED, result


async def test_http_connects_to_the_checked_address(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(http_server.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()

    async def fake_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        assert host == "service.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    result, _ = await run(make_spec("http", f"http://service.example:{port}/echo"))
    assert result.outcome is Outcome.COMPLETED, result
    assert result.result is not None
    assert json.loads(result.result)["headers"]["host"] == f"service.example:{port}"


@pytest.mark.parametrize(
    ("url", "address", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local/metadata"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", "link-local/metadata"),
        ("http://[fe80::1]/", "fe80::1", "link-local/metadata"),
        ("http://10.1.2.3/", "10.1.2.3", "private"),
        ("http://172.16.0.1/", "172.16.0.1", "private"),
        ("http://192.168.1.1/", "192.168.1.1", "private"),
        ("http://100.64.0.1/", "100.64.0.1", "private"),
        ("http://[fd00::1]/", "fd00::1", "private"),
        ("http://224.0.0.1/", "224.0.0.1", "multicast"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
    ],
)
async def test_http_refuses_internal_addresses_before_connecting(url: str, address: str, reason: str) -> None:
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: requests.append(request) or httpx.Response(200))
    logs = Collector()
    result = await HttpExecutor(transport=transport).run(make_spec("http", url), logs, asyncio.Event())
    assert result.outcome is Outcome.FAILED
    assert result.error_message is not None
    assert result.error_message.startswith(f"refusing to call {url}: address {address} is {reason}")
    assert requests == []
    assert logs.messages("system") == [result.error_message]


async def test_http_allow_private_urls_permits_private_but_never_metadata() -> None:
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(
        lambda request: requests.append(request) or httpx.Response(200, text="ok")
    )
    executor = HttpExecutor(allow_private_urls=True, transport=transport)
    result = await executor.run(make_spec("http", "http://10.1.2.3:8080/hook"), Collector(), asyncio.Event())
    assert (result.outcome, result.result) == (Outcome.COMPLETED, "ok")
    assert requests[0].url.host == "10.1.2.3"

    result = await executor.run(make_spec("http", "http://169.254.169.254/"), Collector(), asyncio.Event())
    assert result.outcome is Outcome.FAILED
    assert len(requests) == 1


async def test_http_refuses_a_name_resolving_to_an_internal_address(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def fake_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: requests.append(request) or httpx.Response(200))
    result = await HttpExecutor(transport=transport).run(
        make_spec("http", "https://innocent.example/"), Collector(), asyncio.Event()
    )
    assert result.error_message == (
        "refusing to call https://innocent.example/: address 169.254.169.254 is link-local/metadata"
    )
    assert requests == []


async def test_http_rejects_other_schemes() -> None:
    result, _ = await run(make_spec("http", "file:///etc/passwd"))
    assert result.outcome is Outcome.FAILED
    assert result.error_message == "refusing to call file:///etc/passwd: only http and https URLs are allowed"


async def test_http_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result, _ = await run(make_spec("http", f"http://127.0.0.1:{port}/"))
    assert result.outcome is Outcome.FAILED
    assert result.error_message is not None
    assert result.error_message.startswith(f"cannot connect to http://127.0.0.1:{port}/")


async def test_http_timeout(http_server: str) -> None:
    started = time.monotonic()
    result, _ = await run(make_spec("http", f"{http_server}/slow", timeout=0.5))
    assert result.outcome is Outcome.TIMED_OUT
    assert result.error_message == "timed out after 0.5s"
    assert time.monotonic() - started < 3


async def test_http_abort_cancels_the_request(http_server: str) -> None:
    abort = asyncio.Event()
    task = asyncio.create_task(run(make_spec("http", f"{http_server}/slow"), abort=abort))
    await asyncio.sleep(0.3)
    aborted_at = time.monotonic()
    abort.set()
    result, logs = await asyncio.wait_for(task, timeout=5)
    assert time.monotonic() - aborted_at < 2
    assert (result.outcome, result.error_message) == (Outcome.ABORTED, "aborted")
    assert any("cancelled" in m for m in logs.messages("system"))


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")
async def test_escaped_process_holding_the_pipes_does_not_hang_the_run() -> None:
    # setsid leaves the run's process group, which is outside the cleanup guarantee; the run must
    # still finish instead of waiting for EOF on a pipe that process keeps open.
    started = time.monotonic()
    # The pause lets the child reach setsid() before the run ends; otherwise the run's own cleanup
    # kills it while it is still in the group, and nothing escapes.
    result, logs = await run(make_spec("shell", "setsid sleep 30 & echo $!; sleep 0.5"))
    try:
        assert result.outcome is Outcome.COMPLETED
        assert time.monotonic() - started < 6
        assert any("held open" in m for m in logs.messages("system"))
    finally:
        if result.result is not None:
            with contextlib.suppress(psutil.Error):
                psutil.Process(int(result.result)).kill()
