"""The ``shell`` and ``python`` executors: a run is a process group, and ending the run ends the group.

Process-based runs are started in their own session, so the run owns a whole process group. Every
way a run can end (timeout, abort, or the leader simply exiting) finishes by signalling that group,
which is what keeps background grandchildren from outliving the run. Processes that deliberately
leave the group (``setsid``, daemonising) are outside this guarantee.

The worker itself can die without a chance to clean up (``kill -9``, the OOM killer). Each group is
told to the worker's guardian (:mod:`.guardian`), which ends it when the worker is gone. Without that,
the run would go on beside its own retry on another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import site
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import taskyard
from taskyard.worker.executors.base import (
    ERROR_MESSAGE_LIMIT,
    RESULT_LIMIT,
    ExecutionResult,
    ExecutionSpec,
    LogSink,
    Outcome,
    logger,
)
from taskyard.worker.executors.guardian import Guardian
from taskyard.worker.executors.output import (
    LogBatcher,
    StreamState,
    clip_bytes,
    format_seconds,
    pump,
    run_batched,
    system_line,
)

# How often group membership is re-checked during a kill's grace period.
_POLL_SECONDS = 0.05
# Once the process group is gone, readers normally hit EOF within milliseconds. If they make no
# progress for this long, a process outside the group holds the pipes and we stop waiting for it.
_DRAIN_IDLE_SECONDS = 2.0
# Upper bound on waiting for the leader to be reaped after SIGKILL (only exceeded by processes stuck
# in uninterruptible sleep).
_REAP_TIMEOUT_SECONDS = 5.0


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


def _group_exists(pgid: int) -> bool:
    """Whether any process, zombies included, is still in the group: one system call, so the common end
    of a run (its group gone with its leader) costs no scan of every process."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_has_live_members(pgid: int) -> bool:
    if not _group_exists(pgid):
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


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Says the moment the leader exits. asyncio's Process.wait() also waits for stdout and stderr to
    close, which a backgrounded grandchild can keep open for as long as it likes."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


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


# --------------------------------------------------------------------------------------------------
# The executor


@dataclass
class _Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    result_file: str | None = None
    # Python tracebacks end with the exception line, which explains a failure far better than the
    # bare exit code does.
    error_from_stderr: bool = False


class _ProcessExecutor:
    def __init__(self, *, kill_grace_seconds: float = 5.0, guardian: Guardian | None = None) -> None:
        self._kill_grace = max(0.0, kill_grace_seconds)
        self._guardian = guardian

    def _prepare(self, spec: ExecutionSpec) -> _Launch | ExecutionResult:
        raise NotImplementedError

    async def run(self, spec: ExecutionSpec, sink: LogSink, abort: asyncio.Event) -> ExecutionResult:
        return await run_batched(
            sink, abort, lambda batcher: self._run(spec, batcher, abort), not_started="the process was started"
        )

    async def _run(self, spec: ExecutionSpec, batcher: LogBatcher, abort: asyncio.Event) -> ExecutionResult:
        try:
            launch = self._prepare(spec)
        except OSError as exc:
            message = f"cannot prepare the run: {exc}"
            await batcher.add(system_line(message))
            return ExecutionResult(Outcome.FAILED, None, message, None)
        if isinstance(launch, ExecutionResult):
            if launch.error_message:
                await batcher.add(system_line(launch.error_message))
            return launch
        try:
            return await self._execute(spec, launch, batcher, abort)
        finally:
            if launch.result_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(launch.result_file)

    async def _execute(
        self, spec: ExecutionSpec, launch: _Launch, batcher: LogBatcher, abort: asyncio.Event
    ) -> ExecutionResult:
        env = os.environ | spec.env | launch.env | {"PYTHONUNBUFFERED": "1"}
        if self._guardian is not None:
            env |= self._guardian.env()
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(limit=2**16, loop=loop),
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=env,
                cwd=spec.workdir,
            )
            proc = asyncio.subprocess.Process(transport, protocol, loop)
        except OSError as exc:
            message = _launch_error(exc, launch.argv[0], spec.workdir)
            await batcher.add(system_line(message))
            return ExecutionResult(Outcome.FAILED, None, message, None)

        # start_new_session makes the child a session and group leader, so its pid is the pgid.
        pgid = proc.pid
        if self._guardian is not None:
            self._guardian.watch(pgid)
        if spec.on_start is not None:
            try:
                spec.on_start(pgid)
            except Exception:  # a hook must not break the run
                logger.exception("the on_start hook of run %d failed", spec.run_id)
        assert proc.stdout is not None and proc.stderr is not None
        stdout_state, stderr_state = StreamState(), StreamState()
        readers = [
            asyncio.create_task(
                pump(proc.stdout, stream="stdout", level="info", batcher=batcher, state=stdout_state)
            ),
            asyncio.create_task(
                pump(proc.stderr, stream="stderr", level="error", batcher=batcher, state=stderr_state)
            ),
        ]
        finished = False
        stop_reason: str | None = None
        try:
            stop_reason = await self._wait_for_leader(proc, protocol.exited, abort, spec.timeout_seconds)
            if stop_reason is None:
                # The leader is done, but anything it backgrounded is still in the group and would
                # keep running (and keep our pipes open) with nobody tracking it. A finished run must
                # not leave orphans behind, so the group is terminated just like on timeout.
                if _group_exists(pgid) and await asyncio.to_thread(_group_has_live_members, pgid):
                    await batcher.add(
                        system_line(
                            f"command exited but left processes running in process group {pgid}; "
                            "terminating them"
                        )
                    )
                    await self._terminate_group(pgid, batcher)
            else:
                if stop_reason == "timeout":
                    assert spec.timeout_seconds is not None
                    what = f"timed out after {format_seconds(spec.timeout_seconds)}s"
                else:
                    what = "abort requested"
                await batcher.add(
                    system_line(
                        f"{what}: sending SIGTERM to process group {pgid}, "
                        f"SIGKILL after {format_seconds(self._kill_grace)}s"
                    )
                )
                await self._terminate_group(pgid, batcher)
                await self._reap(proc)
            if not await self._drain(readers, batcher):
                await batcher.add(
                    system_line(
                        "output pipes are still held open by a process outside the run's process group; "
                        "stopped reading"
                    )
                )
                transport.close()
            finished = True
        finally:
            if not finished:
                # Cancelled (worker shutting down) or crashed: there is no time for a grace period,
                # but the run's processes must not outlive it.
                _signal_group(pgid, signal.SIGKILL)
                for task in readers:
                    task.cancel()
            if self._guardian is not None:
                self._guardian.release(pgid)

        returncode = proc.returncode
        stdout_tail = clip_bytes(stdout_state.last_line, RESULT_LIMIT) if stdout_state.last_line else None
        if stop_reason == "timeout":
            assert spec.timeout_seconds is not None
            error = f"timed out after {format_seconds(spec.timeout_seconds)}s (process group killed)"
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
            reason = clip_bytes(stderr_state.last_line.strip(), ERROR_MESSAGE_LIMIT)
            error = f"{reason} ({error})"
        return ExecutionResult(Outcome.FAILED, stdout_tail, error, returncode)

    async def _wait_for_leader(
        self, proc: asyncio.subprocess.Process, exited: asyncio.Future[None], abort: asyncio.Event,
        timeout: float | None,
    ) -> str | None:
        """Returns None when the leader exited, otherwise "timeout" or "abort"."""
        aborter: asyncio.Future[object] = asyncio.ensure_future(abort.wait())
        watched: set[asyncio.Future[object]] = {exited, aborter}  # type: ignore[arg-type]
        try:
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborter.cancel()
            await asyncio.gather(aborter, return_exceptions=True)
        # Checked first: a run that finished in the same instant it was aborted did finish.
        if exited.done() or proc.returncode is not None:
            return None
        return "abort" if abort.is_set() else "timeout"

    async def _terminate_group(self, pgid: int, batcher: LogBatcher) -> None:
        if not _signal_group(pgid, signal.SIGTERM):
            return
        deadline = time.monotonic() + self._kill_grace
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            if not await asyncio.to_thread(_group_has_live_members, pgid):
                return
        if _signal_group(pgid, signal.SIGKILL):
            await batcher.add(
                system_line(
                    f"process group {pgid} still running {format_seconds(self._kill_grace)}s after "
                    "SIGTERM; sent SIGKILL"
                )
            )

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + _REAP_TIMEOUT_SECONDS
        while proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)

    async def _drain(self, readers: Sequence[asyncio.Task[None]], batcher: LogBatcher) -> bool:
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

    async def _read_result_file(self, path: str, batcher: LogBatcher) -> str | None:
        try:
            raw = await asyncio.to_thread(_read_head, path, RESULT_LIMIT + 1)
        except OSError as exc:
            await batcher.add(system_line(f"cannot read the function's result: {exc}"))
            return None
        if len(raw) > RESULT_LIMIT:
            # Cutting JSON in half would hand the server something unparseable; no result is better.
            await batcher.add(
                system_line(f"result JSON is larger than {RESULT_LIMIT // 1024} KiB; it was dropped")
            )
            return None
        return raw.decode("utf-8", "replace") if raw else None


# --------------------------------------------------------------------------------------------------
# Shell and Python


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
    # The directory that holds the taskyard package (src/ in a checkout).
    root = Path(taskyard.__file__).resolve().parents[1]
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
