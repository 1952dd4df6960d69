"""Process helpers for peer benchmarks: peers run in their own virtual environments, so the caller talks to them
through subprocesses only, and every wait is bounded so a wedged peer fails the benchmark instead of hanging it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import psutil


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    stop_all([proc], timeout)


def stop_all(procs: list[subprocess.Popen[Any]], timeout: float = 20) -> None:
    """SIGTERM to each process (a worker's warm shutdown stops its own pool), all at once so shutdowns overlap;
    SIGKILL to the session of any still alive after `timeout`; then SIGKILL to any child seen before that
    outlived its parent. Expects start_new_session=True."""
    children: list[psutil.Process] = []
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children += psutil.Process(proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # Not reaped yet, so the session id cannot have been reused by an unrelated process.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    for child in children:
        # psutil checks the start time too, so a recycled pid is never hit.
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()


class JsonLineDriver:
    """A helper process that reads one JSON command per stdin line and answers one JSON line on stdout.

    Replies are read on a thread so each request can have a deadline; a blocking readline could not."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log_file, text=True, start_new_session=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def request(self, wait: float, /, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise RuntimeError(f"peer driver exited early: {tail(self.log)}") from exc
        try:
            line = self._lines.get(timeout=wait)
        except queue.Empty:
            raise RuntimeError(f"peer driver gave no answer to {command['cmd']!r} within {wait:.0f} s: "
                               f"{tail(self.log)}") from None
        if line is None:
            raise RuntimeError(f"peer driver exited during {command['cmd']!r}: {tail(self.log)}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"peer driver failed on {command['cmd']!r}: {reply['error']}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # end of input is the driver's cue to exit
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        stop(self.proc, timeout=5)
        self._log_file.close()
