"""Executors: the code that actually runs one run on a worker.

This module knows nothing about the server. The worker loop turns a claimed run into an
:class:`ExecutionSpec`, hands it to the executor for the task type together with a log sink and an
abort event, and reports the :class:`ExecutionResult` back over HTTP.

Process-based runs (``shell`` and ``python``) are started in their own session, so the run owns a
whole process group. Every way a run can end (timeout, abort, or the leader simply exiting) finishes
by signalling that group, which is what keeps background grandchildren from outliving the run.
Processes that deliberately leave the group (``setsid``, daemonising) are outside this guarantee.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ipaddress
import json
import logging
import os
import shlex
import signal
import site
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

__all__ = [
    "SUPPORTED_TASK_TYPES",
    "ExecutionResult",
    "ExecutionSpec",
    "Executor",
    "HttpExecutor",
    "LogLine",
    "LogSink",
    "Outcome",
    "PythonExecutor",
    "ShellExecutor",
    "UnsupportedTaskTypeError",
    "executor_for",
]

logger = logging.getLogger(__name__)

SUPPORTED_TASK_TYPES: tuple[str, ...] = ("shell", "python", "http")

LOG_MESSAGE_LIMIT = 8 * 1024
RESULT_LIMIT = 64 * 1024
BATCH_MAX_LINES = 200
BATCH_MAX_DELAY_SECONDS = 0.2
DEFAULT_HTTP_TIMEOUT_SECONDS = 30.0

_READ_CHUNK = 64 * 1024
_ERROR_MESSAGE_LIMIT = 2 * 1024
_TRUNCATED_MARK = "…[truncated]"
# How often we look at the leader while waiting. asyncio's Process.wait() only returns once the
# stdout/stderr pipes are closed too, and a backgrounded grandchild keeps them open, so the leader's
# exit has to be noticed by polling its return code.
_POLL_SECONDS = 0.05
# Once the process group is gone, readers normally hit EOF within milliseconds. If they make no
# progress for this long, a process outside the group holds the pipes and we stop waiting for it.
_DRAIN_IDLE_SECONDS = 2.0
# Upper bound on waiting for the leader to be reaped after SIGKILL (only exceeded by processes stuck
# in uninterruptible sleep).
_REAP_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ExecutionSpec:
    run_id: int
    task_type: str
    command: str
    arguments: list[str]
    parameters: dict[str, Any]
    metadata: dict[str, Any]
    timeout_seconds: float | None
    env: dict[str, str]
    workdir: str | None = None


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    message: str
    stream: str


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ABORTED = "aborted"


@dataclass(frozen=True)
class ExecutionResult:
    outcome: Outcome
    result: str | None
    error_message: str | None
    # For process runs: the leader's return code, negative when it died from a signal (the
    # subprocess convention). None when nothing was started and for HTTP runs.
    exit_code: int | None


LogSink = Callable[[list[LogLine]], Awaitable[None]]


class Executor(Protocol):
    async def run(self, spec: ExecutionSpec, sink: LogSink, abort: asyncio.Event) -> ExecutionResult: ...


class UnsupportedTaskTypeError(ValueError, KeyError):
    """Raised by :func:`executor_for`; both a ValueError and a KeyError so either kind of caller copes."""

    def __str__(self) -> str:
        # KeyError would otherwise repr() the message.
        return str(self.args[0]) if self.args else ""


def executor_for(
    task_type: str, *, kill_grace_seconds: float = 5.0, allow_private_urls: bool = False
) -> Executor:
    if task_type == "shell":
        return ShellExecutor(kill_grace_seconds=kill_grace_seconds)
    if task_type == "python":
        return PythonExecutor(kill_grace_seconds=kill_grace_seconds)
    if task_type == "http":
        return HttpExecutor(allow_private_urls=allow_private_urls)
    raise UnsupportedTaskTypeError(
        f"unsupported task type {task_type!r}; expected one of {', '.join(SUPPORTED_TASK_TYPES)}"
    )


# --------------------------------------------------------------------------------------------------
# Text helpers


def _clip_bytes(raw: bytes, limit: int) -> str:
    if len(raw) <= limit:
        return raw.decode("utf-8", "replace")
    # A non-final incremental decode drops a multi-byte character cut in half at the limit instead
    # of turning it into a replacement character.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw[:limit], final=False)


def _clip_text(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "replace")
    return text if len(raw) <= limit else _clip_bytes(raw, limit)


def _log_message(raw: bytes, truncated: bool) -> str:
    if not truncated and len(raw) <= LOG_MESSAGE_LIMIT:
        return raw.decode("utf-8", "replace")
    budget = LOG_MESSAGE_LIMIT - len(_TRUNCATED_MARK.encode())
    return _clip_bytes(raw, budget) + _TRUNCATED_MARK


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _now() -> datetime:
    return datetime.now(UTC)


def _system_line(message: str) -> LogLine:
    return LogLine(_now(), "warn", _clip_text(message, LOG_MESSAGE_LIMIT), "system")


# --------------------------------------------------------------------------------------------------
# Log batching


class _LogBatcher:
    """Buffers log lines and hands them to the sink in order, in batches.

    A batch goes out when ``max_lines`` are buffered or ``max_delay`` after the first buffered
    line, whichever comes first. Sink failures are counted and logged but never propagate: losing
    some log lines is better than failing a run whose command succeeded.
    """

    def __init__(
        self,
        sink: LogSink,
        *,
        max_lines: int = BATCH_MAX_LINES,
        max_delay: float = BATCH_MAX_DELAY_SECONDS,
    ) -> None:
        self._sink = sink
        self._max_lines = max_lines
        self._max_delay = max_delay
        self._pending: list[LogLine] = []
        # One lock so timer-driven and size-driven flushes cannot reorder batches.
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tasks: set[asyncio.Task[None]] = set()
        self.sink_failures = 0
        self.sink_calls = 0
        self.in_flight = False
        # Bumped on every sign of life; the drain logic uses it to tell "slow" from "stuck".
        self.activity = 0

    def touch(self) -> None:
        self.activity += 1

    async def add(self, line: LogLine) -> None:
        self._pending.append(line)
        self.activity += 1
        if len(self._pending) >= self._max_lines:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self._on_timer)

    async def add_all(self, lines: Iterable[LogLine]) -> None:
        for line in lines:
            await self.add(line)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._timer_tasks.add(task)
        task.add_done_callback(self._timer_tasks.discard)

    async def flush(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            while self._pending:
                batch = self._pending[: self._max_lines]
                del self._pending[: self._max_lines]
                await self._deliver(batch)

    async def _deliver(self, batch: list[LogLine]) -> None:
        self.in_flight = True
        self.sink_calls += 1
        try:
            await self._sink(batch)
        except Exception:
            self.sink_failures += 1
            if self.sink_failures == 1:
                logger.warning("log sink failed; continuing the run without those lines", exc_info=True)
        finally:
            self.in_flight = False
            self.activity += 1

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timer_tasks:
            await asyncio.gather(*self._timer_tasks, return_exceptions=True)
        await self.flush()
        if self.sink_failures:
            logger.warning("log sink failed %d time(s) during the run", self.sink_failures)

    def discard(self) -> None:
        """Drop everything without awaiting; used when the run itself is being cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._timer_tasks:
            task.cancel()
        self._pending.clear()


# --------------------------------------------------------------------------------------------------
# Reading process output


class _LineSplitter:
    """Splits a byte stream into lines while keeping at most ``cap`` bytes of any one line.

    Reading fixed-size chunks instead of ``readline()`` means a single enormous line (minified JSON,
    a progress bar without newlines) costs bounded memory and never raises LimitOverrunError.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._buffer = bytearray()
        self._truncated = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._append(data[start:])
                return lines
            self._append(data[start:newline])
            lines.append(self._take())
            start = newline + 1

    def finish(self) -> tuple[bytes, bool] | None:
        if not self._buffer and not self._truncated:
            return None
        return self._take()

    def _append(self, piece: bytes) -> None:
        room = self._cap - len(self._buffer)
        if len(piece) > room:
            self._truncated = True
            piece = piece[: max(room, 0)]
        self._buffer += piece

    def _take(self) -> tuple[bytes, bool]:
        raw = bytes(self._buffer)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        truncated = self._truncated
        self._buffer.clear()
        self._truncated = False
        return raw, truncated


@dataclass
class _StreamState:
    last_line: bytes | None = None


async def _pump(
    reader: asyncio.StreamReader,
    *,
    stream: str,
    level: str,
    batcher: _LogBatcher,
    state: _StreamState,
) -> None:
    splitter = _LineSplitter(RESULT_LIMIT)

    async def emit(raw: bytes, truncated: bool) -> None:
        if raw.strip():
            state.last_line = raw
        await batcher.add(LogLine(_now(), level, _log_message(raw, truncated), stream))

    while chunk := await reader.read(_READ_CHUNK):
        batcher.touch()
        for raw, truncated in splitter.feed(chunk):
            await emit(raw, truncated)
    tail = splitter.finish()
    if tail is not None:
        await emit(*tail)


# --------------------------------------------------------------------------------------------------
# Process groups


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal the group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only possible if the id now names someone else's group; it is not ours to touch.
        return False
    return True


def _group_has_live_members(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) also succeeds for zombies. Orphaned grandchildren are re-parented to PID 1, and in
    # containers PID 1 often never reaps them, so zombies must not count or every cleanup would
    # wait out the full grace period.
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _describe_returncode(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _launch_error(exc: OSError, program: str, workdir: str | None) -> str:
    if workdir is not None and not os.path.isdir(workdir):
        return f"cannot start process: working directory {workdir!r} does not exist"
    return f"cannot start {program!r}: {exc.strerror or exc}"


def _read_head(path: str, size: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


@dataclass
class _Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    result_file: str | None = None
    # Python tracebacks end with the exception line, which explains a failure far better than the
    # bare exit code does.
    error_from_stderr: bool = False


class _ProcessExecutor:
    def __init__(self, *, kill_grace_seconds: float = 5.0) -> None:
        self._kill_grace = max(0.0, kill_grace_seconds)

    def _prepare(self, spec: ExecutionSpec) -> _Launch | ExecutionResult:
        raise NotImplementedError

    async def run(self, spec: ExecutionSpec, sink: LogSink, abort: asyncio.Event) -> ExecutionResult:
        batcher = _LogBatcher(sink)
        try:
            result = await self._run(spec, batcher, abort)
        except BaseException:
            batcher.discard()
            raise
        await batcher.close()
        return result

    async def _run(self, spec: ExecutionSpec, batcher: _LogBatcher, abort: asyncio.Event) -> ExecutionResult:
        if abort.is_set():
            await batcher.add(_system_line("aborted before the process was started"))
            return ExecutionResult(Outcome.ABORTED, None, "aborted", None)
        try:
            launch = self._prepare(spec)
        except OSError as exc:
            message = f"cannot prepare the run: {exc}"
            await batcher.add(_system_line(message))
            return ExecutionResult(Outcome.FAILED, None, message, None)
        if isinstance(launch, ExecutionResult):
            if launch.error_message:
                await batcher.add(_system_line(launch.error_message))
            return launch
        try:
            return await self._execute(spec, launch, batcher, abort)
        finally:
            if launch.result_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(launch.result_file)

    async def _execute(
        self, spec: ExecutionSpec, launch: _Launch, batcher: _LogBatcher, abort: asyncio.Event
    ) -> ExecutionResult:
        env = os.environ | spec.env | launch.env | {"PYTHONUNBUFFERED": "1"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=env,
                cwd=spec.workdir,
            )
        except OSError as exc:
            message = _launch_error(exc, launch.argv[0], spec.workdir)
            await batcher.add(_system_line(message))
            return ExecutionResult(Outcome.FAILED, None, message, None)

        # start_new_session makes the child a session and group leader, so its pid is the pgid.
        pgid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        stdout_state, stderr_state = _StreamState(), _StreamState()
        readers = [
            asyncio.create_task(
                _pump(proc.stdout, stream="stdout", level="info", batcher=batcher, state=stdout_state)
            ),
            asyncio.create_task(
                _pump(proc.stderr, stream="stderr", level="error", batcher=batcher, state=stderr_state)
            ),
        ]
        finished = False
        stop_reason: str | None = None
        try:
            stop_reason = await self._wait_for_leader(proc, abort, spec.timeout_seconds)
            if stop_reason is None:
                # The leader is done, but anything it backgrounded is still in the group and would
                # keep running (and keep our pipes open) with nobody tracking it. A finished run must
                # not leave orphans behind, so the group is terminated just like on timeout.
                if await asyncio.to_thread(_group_has_live_members, pgid):
                    await batcher.add(
                        _system_line(
                            f"command exited but left processes running in process group {pgid}; "
                            "terminating them"
                        )
                    )
                    await self._terminate_group(pgid, batcher)
            else:
                if stop_reason == "timeout":
                    assert spec.timeout_seconds is not None
                    what = f"timed out after {_format_seconds(spec.timeout_seconds)}s"
                else:
                    what = "abort requested"
                await batcher.add(
                    _system_line(
                        f"{what}: sending SIGTERM to process group {pgid}, "
                        f"SIGKILL after {_format_seconds(self._kill_grace)}s"
                    )
                )
                await self._terminate_group(pgid, batcher)
                await self._reap(proc)
            if not await self._drain(readers, batcher):
                await batcher.add(
                    _system_line(
                        "output pipes are still held open by a process outside the run's process group; "
                        "stopped reading"
                    )
                )
                transport = getattr(proc, "_transport", None)
                if isinstance(transport, asyncio.SubprocessTransport):
                    transport.close()
            finished = True
        finally:
            if not finished:
                # Cancelled (worker shutting down) or crashed: there is no time for a grace period,
                # but the run's processes must not outlive it.
                _signal_group(pgid, signal.SIGKILL)
                for task in readers:
                    task.cancel()

        returncode = proc.returncode
        stdout_tail = _clip_bytes(stdout_state.last_line, RESULT_LIMIT) if stdout_state.last_line else None
        if stop_reason == "timeout":
            assert spec.timeout_seconds is not None
            error = f"timed out after {_format_seconds(spec.timeout_seconds)}s (process group killed)"
            return ExecutionResult(Outcome.TIMED_OUT, stdout_tail, error, returncode)
        if stop_reason == "abort":
            return ExecutionResult(Outcome.ABORTED, stdout_tail, "aborted", returncode)
        assert returncode is not None
        if returncode == 0:
            result = stdout_tail
            if launch.result_file is not None:
                result = await self._read_result_file(launch.result_file, batcher)
            return ExecutionResult(Outcome.COMPLETED, result, None, 0)
        error = _describe_returncode(returncode)
        if launch.error_from_stderr and stderr_state.last_line:
            reason = _clip_bytes(stderr_state.last_line.strip(), _ERROR_MESSAGE_LIMIT)
            error = f"{reason} ({error})"
        return ExecutionResult(Outcome.FAILED, stdout_tail, error, returncode)

    async def _wait_for_leader(
        self, proc: asyncio.subprocess.Process, abort: asyncio.Event, timeout: float | None
    ) -> str | None:
        """Returns None when the leader exited, otherwise "timeout" or "abort"."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = asyncio.create_task(proc.wait())
        aborter = asyncio.create_task(abort.wait())
        try:
            while True:
                # Checked first: a run that finished in the same instant it was aborted did finish.
                if proc.returncode is not None:
                    return None
                if abort.is_set():
                    return "abort"
                pause = _POLL_SECONDS
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return "timeout"
                    pause = min(pause, remaining)
                await asyncio.wait({waiter, aborter}, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, aborter):
                task.cancel()
            await asyncio.gather(waiter, aborter, return_exceptions=True)

    async def _terminate_group(self, pgid: int, batcher: _LogBatcher) -> None:
        if not _signal_group(pgid, signal.SIGTERM):
            return
        deadline = time.monotonic() + self._kill_grace
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            if not await asyncio.to_thread(_group_has_live_members, pgid):
                return
        if _signal_group(pgid, signal.SIGKILL):
            await batcher.add(
                _system_line(
                    f"process group {pgid} still running {_format_seconds(self._kill_grace)}s after "
                    "SIGTERM; sent SIGKILL"
                )
            )

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + _REAP_TIMEOUT_SECONDS
        while proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)

    async def _drain(self, readers: Sequence[asyncio.Task[None]], batcher: _LogBatcher) -> bool:
        """Waits for both readers to reach EOF; False if they stalled and were cancelled."""
        pending: set[asyncio.Task[None]] = set(readers)
        last_activity = batcher.activity
        idle_since = time.monotonic()
        while pending:
            done, pending = await asyncio.wait(pending, timeout=0.25)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("output reader failed", exc_info=task.exception())
            now = time.monotonic()
            if batcher.activity != last_activity or batcher.in_flight:
                last_activity = batcher.activity
                idle_since = now
            elif pending and now - idle_since > _DRAIN_IDLE_SECONDS:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return False
        return True

    async def _read_result_file(self, path: str, batcher: _LogBatcher) -> str | None:
        try:
            raw = await asyncio.to_thread(_read_head, path, RESULT_LIMIT + 1)
        except OSError as exc:
            await batcher.add(_system_line(f"cannot read the function's result: {exc}"))
            return None
        if len(raw) > RESULT_LIMIT:
            # Cutting JSON in half would hand the server something unparseable; no result is better.
            await batcher.add(
                _system_line(f"result JSON is larger than {RESULT_LIMIT // 1024} KiB; it was dropped")
            )
            return None
        return raw.decode("utf-8", "replace") if raw else None


class ShellExecutor(_ProcessExecutor):
    def _prepare(self, spec: ExecutionSpec) -> _Launch | ExecutionResult:
        script = " ".join([spec.command, *(shlex.quote(arg) for arg in spec.arguments)])
        return _Launch(argv=["/bin/sh", "-c", script])


def _is_function_target(command: str) -> bool:
    return ":" in command and "/" not in command and not command.endswith(".py")


def _taskyard_import_root() -> str | None:
    """Directory that has to be importable for ``python -m taskyard.worker.pyfunc`` to work.

    The run's working directory replaces the worker's, so a relative PYTHONPATH (``PYTHONPATH=src``
    in a checkout) would no longer find taskyard. Site directories are skipped: the child finds
    those anyway, and putting them on PYTHONPATH would move them ahead of the standard library.
    """
    root = Path(__file__).resolve().parents[2]
    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    return None if root in site_dirs else str(root)


class PythonExecutor(_ProcessExecutor):
    def _prepare(self, spec: ExecutionSpec) -> _Launch | ExecutionResult:
        if _is_function_target(spec.command):
            return self._prepare_function(spec)
        script = Path(spec.workdir or ".") / spec.command
        if not script.is_file():
            return ExecutionResult(Outcome.FAILED, None, f"python script not found: {spec.command}", None)
        return _Launch(argv=[sys.executable, spec.command, *spec.arguments], error_from_stderr=True)

    def _prepare_function(self, spec: ExecutionSpec) -> _Launch:
        fd, result_file = tempfile.mkstemp(prefix=f"taskyard-run-{spec.run_id}-", suffix=".json")
        os.close(fd)
        env = {"TASKYARD_RESULT_FILE": result_file}
        root = _taskyard_import_root()
        if root is not None:
            existing = spec.env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (existing, root) if p)
        return _Launch(
            argv=[sys.executable, "-m", "taskyard.worker.pyfunc", spec.command, *spec.arguments],
            env=env,
            result_file=result_file,
            error_from_stderr=True,
        )


# --------------------------------------------------------------------------------------------------
# HTTP

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints hand out credentials; they are refused even with
# allow_private_urls, which exists for on-prem services, not for this.
_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_UNSPECIFIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fc00::/7"),
)


def _address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` must not be called, or None if it may be."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Loopback stays allowed: developers point HTTP tasks at services on their own machine.
    if address.is_loopback:
        return None
    if address in _METADATA_ADDRESSES or any(address in net for net in _LINK_LOCAL):
        return "link-local/metadata"
    if address.is_multicast:
        return "multicast"
    if any(address in net for net in _UNSPECIFIED):
        return "unspecified"
    if any(address in net for net in _PRIVATE):
        return None if allow_private else "private (set allow_private_urls to permit it)"
    if address.is_reserved:
        return "reserved"
    return None


class _Refused(Exception):
    pass


def _parse_address(text: str) -> IPAddress:
    # getaddrinfo reports IPv6 link-local addresses with their zone ("fe80::1%eth0").
    return ipaddress.ip_address(text.split("%", 1)[0])


def _query_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return value
    return json.dumps(value, default=str)


class HttpExecutor:
    def __init__(
        self, *, allow_private_urls: bool = False, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._allow_private = allow_private_urls
        # Tests inject a MockTransport here; production always uses httpx's own.
        self._transport = transport

    async def run(self, spec: ExecutionSpec, sink: LogSink, abort: asyncio.Event) -> ExecutionResult:
        batcher = _LogBatcher(sink)
        try:
            result = await self._run(spec, batcher, abort)
        except BaseException:
            batcher.discard()
            raise
        await batcher.close()
        return result

    async def _run(self, spec: ExecutionSpec, batcher: _LogBatcher, abort: asyncio.Event) -> ExecutionResult:
        if abort.is_set():
            await batcher.add(_system_line("aborted before the request was sent"))
            return ExecutionResult(Outcome.ABORTED, None, "aborted", None)
        timeout = spec.timeout_seconds if spec.timeout_seconds is not None else DEFAULT_HTTP_TIMEOUT_SECONDS
        call = asyncio.create_task(self._call(spec, batcher, timeout))
        aborter = asyncio.create_task(abort.wait())
        try:
            await asyncio.wait({call, aborter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborter.cancel()
            if not call.done():
                call.cancel()
            await asyncio.gather(call, aborter, return_exceptions=True)
        if not call.cancelled():
            return call.result()
        await batcher.add(_system_line("abort requested: HTTP request cancelled"))
        return ExecutionResult(Outcome.ABORTED, None, "aborted", None)

    async def _call(self, spec: ExecutionSpec, batcher: _LogBatcher, timeout: float) -> ExecutionResult:
        url_text = spec.command.strip()
        try:
            async with asyncio.timeout(timeout):
                return await self._request(spec, url_text, batcher, timeout)
        except _Refused as exc:
            message = str(exc)
        except (TimeoutError, httpx.TimeoutException):
            message = f"timed out after {_format_seconds(timeout)}s"
            await batcher.add(_system_line(f"{message}: HTTP request to {url_text} cancelled"))
            return ExecutionResult(Outcome.TIMED_OUT, None, message, None)
        except httpx.ConnectError as exc:
            message = f"cannot connect to {url_text}: {str(exc) or type(exc).__name__}"
        except httpx.HTTPError as exc:
            message = f"HTTP request to {url_text} failed: {type(exc).__name__}: {exc}"
        except (ValueError, TypeError) as exc:
            # Malformed task metadata (a header value that is not latin-1, a body that is not JSON
            # serialisable) is the task's fault, not the worker's: fail the run, don't crash.
            message = f"cannot build the HTTP request to {url_text}: {type(exc).__name__}: {exc}"
        await batcher.add(_system_line(message))
        return ExecutionResult(Outcome.FAILED, None, _clip_text(message, _ERROR_MESSAGE_LIMIT), None)

    async def _request(
        self, spec: ExecutionSpec, url_text: str, batcher: _LogBatcher, timeout: float
    ) -> ExecutionResult:
        try:
            url = httpx.URL(url_text)
        except httpx.InvalidURL as exc:
            raise _Refused(f"refusing to call {url_text!r}: invalid URL ({exc})") from None
        if url.scheme not in ("http", "https"):
            raise _Refused(f"refusing to call {url_text}: only http and https URLs are allowed")
        host = url.raw_host.decode("ascii")
        if not host:
            raise _Refused(f"refusing to call {url_text}: the URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(url_text, host, port)

        metadata = spec.metadata
        method = str(metadata.get("method") or ("POST" if spec.parameters else "GET")).upper()
        raw_headers = metadata.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise ValueError(f"metadata 'headers' must be an object, not {type(raw_headers).__name__}")
        headers = {str(k): str(v) for k, v in raw_headers.items()}
        # Connecting to the checked IP rather than the name closes the window in which DNS could be
        # re-pointed at an internal address between our check and httpx's own lookup. The Host
        # header and TLS SNI keep the original name so virtual hosts and certificates still work.
        if not any(k.lower() == "host" for k in headers):
            headers["Host"] = url.netloc.decode("ascii")
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        content: str | bytes | None = None
        json_body: Any = None
        if method in ("GET", "HEAD"):
            if spec.parameters:
                # Merged into the URL here because httpx's params= replaces an existing query string.
                url = url.copy_merge_params({k: _query_value(v) for k, v in spec.parameters.items()})
        elif "body" in metadata:
            body = metadata["body"]
            if isinstance(body, str | bytes):
                content = body
            else:
                json_body = body
        elif spec.parameters:
            json_body = spec.parameters

        # Redirects are not followed: the target of a redirect has not been checked.
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, transport=self._transport
        ) as client:
            last_error: httpx.ConnectError | None = None
            for address in addresses:
                try:
                    started = time.monotonic()
                    async with client.stream(
                        method,
                        url.copy_with(host=address),
                        headers=headers,
                        content=content,
                        json=json_body,
                        extensions=extensions,
                    ) as response:
                        raw, truncated = await self._read_body(response)
                        elapsed_ms = (time.monotonic() - started) * 1000
                        return await self._interpret(
                            method, url_text, response, raw, truncated, elapsed_ms, batcher
                        )
                except httpx.ConnectError as exc:
                    # The name may resolve to several addresses (IPv6 and IPv4); try the next one.
                    last_error = exc
            assert last_error is not None
            raise last_error

    async def _resolve(self, url_text: str, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _Refused(f"cannot resolve host {host!r} of {url_text}: {exc.strerror or exc}") from None
        addresses: list[str] = []
        for info in infos:
            text = str(info[4][0])
            if text not in addresses:
                addresses.append(text)
        if not addresses:
            raise _Refused(f"cannot resolve host {host!r} of {url_text}: no addresses")
        # Every address is checked, not just the first: a name with one public and one internal
        # record must not be usable to reach the internal one.
        for text in addresses:
            reason = _address_refusal(_parse_address(text), allow_private=self._allow_private)
            if reason is not None:
                raise _Refused(f"refusing to call {url_text}: address {text} is {reason}")
        return addresses

    async def _read_body(self, response: httpx.Response) -> tuple[bytes, bool]:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > RESULT_LIMIT:
                return bytes(body[:RESULT_LIMIT]), True
        return bytes(body), False

    async def _interpret(
        self,
        method: str,
        url_text: str,
        response: httpx.Response,
        raw: bytes,
        truncated: bool,
        elapsed_ms: float,
        batcher: _LogBatcher,
    ) -> ExecutionResult:
        status = response.status_code
        reason = response.reason_phrase
        if not reason:
            # HTTP/2 has no reason phrases.
            with contextlib.suppress(ValueError):
                reason = HTTPStatus(status).phrase
        status_text = f"{status} {reason}".strip()
        await batcher.add(
            LogLine(
                _now(),
                "info",
                _clip_text(f"{method} {url_text} -> {status_text} ({elapsed_ms:.0f} ms)", LOG_MESSAGE_LIMIT),
                "stdout",
            )
        )
        encoding = response.encoding or "utf-8"
        try:
            body = codecs.getincrementaldecoder(encoding)("replace").decode(raw, final=not truncated)
        except LookupError:
            body = _clip_bytes(raw, len(raw))
        if truncated:
            await batcher.add(_system_line(f"response body truncated to {RESULT_LIMIT // 1024} KiB"))
        if 200 <= status < 300:
            return ExecutionResult(Outcome.COMPLETED, body, None, None)
        for line in _clip_text(body, LOG_MESSAGE_LIMIT).splitlines():
            await batcher.add(LogLine(_now(), "error", line, "stderr"))
        return ExecutionResult(Outcome.FAILED, None, f"HTTP {status_text}", None)
