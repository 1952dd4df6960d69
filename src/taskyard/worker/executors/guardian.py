"""The guardian: one small process per worker that ends the worker's runs if the worker dies outright.

A run is a process group that the worker ends on timeout, abort and shutdown. A worker killed with
``kill -9`` or by the OOM killer ends nothing, and its runs would go on beside their retries on other
workers. The guardian covers that case. It is started once, in a session of its own (so a signal sent to
the worker's process group does not reach it), and holds the read end of a pipe whose only write end is
the worker's. The worker tells it each run's process group as the run starts (``+pgid``) and ends
(``-pgid``). When the pipe reaches end of file, the worker is gone: the guardian sends SIGTERM to every
group it was told about, and to every process whose environment carries this worker's guard token (a run
started in the instant before the worker died, before its group was told), then SIGKILL to whatever is
left after the grace period.

Each run used to start under ``setpriv --pdeathsig`` with a shell guard in front of it: three programs
per run, about 2 ms of CPU and 4 ms of wall time more than the command alone. The guardian costs one
``os.write`` per batch of runs started or ended, and one bare interpreter per worker (~10 MB resident,
~4 MB of it its own).

The guardian's program is :mod:`.guardian_watch`, which imports nothing but a few standard modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
import sys

from taskyard.worker.executors import guardian_watch
from taskyard.worker.executors.guardian_watch import GUARD_ENV

logger = logging.getLogger("taskyard.worker.execution")


class Guardian:
    """The worker's side: starts the guardian process on first use and tells it about run groups."""

    def __init__(self, kill_grace_seconds: float = 5.0) -> None:
        self.token = secrets.token_hex(8)
        self.kill_grace_seconds = kill_grace_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._groups: set[int] = set()
        self._unsent: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def env(self) -> dict[str, str]:
        """What a run's environment carries so the guardian can find its processes without their group."""
        return {GUARD_ENV: self.token}

    def start(self) -> None:
        """Starts the guardian process unless it is running. Writes before it is up wait in the pipe."""
        if self._process is not None and self._process.poll() is None:
            return
        self._close()
        read_end, write_end = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", guardian_watch.__file__, self.token, str(self.kill_grace_seconds)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self._fd = write_end
        if self._groups:
            self._write("".join(f"+{pgid}\n" for pgid in self._groups))

    def watch(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._queue(f"+{pgid}\n")

    def release(self, pgid: int) -> None:
        if pgid in self._groups:
            self._groups.discard(pgid)
            self._queue(f"-{pgid}\n")

    def _queue(self, message: str) -> None:
        """Sends at the end of this turn of the event loop, so the runs started by one poll answer cost
        one write. A run started in between is still found by its token."""
        self._unsent.append(message)
        if len(self._unsent) > 1:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush)
        except RuntimeError:
            self._flush()

    def _flush(self) -> None:
        message, self._unsent = "".join(self._unsent), []
        if message:
            self._send(message)

    def stop(self) -> None:
        """Lets the guardian exit (it finds nothing left to end when the worker has ended its runs)."""
        self._flush()
        self._close()
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(self.kill_grace_seconds + 5)
            self._process = None

    def _send(self, message: str) -> None:
        try:
            if self._fd is None:
                self.start()
            self._write(message)
        except BrokenPipeError:
            # The guardian died (someone killed it): a new one is told about every group still running.
            logger.warning("the run guardian exited; starting a new one")
            try:
                self.start()
            except OSError as exc:
                logger.error("cannot start the run guardian: %s", exc)
        except OSError as exc:
            logger.error("cannot reach the run guardian: %s", exc)

    def _write(self, message: str) -> None:
        assert self._fd is not None
        data = memoryview(message.encode())
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except BlockingIOError:
            # Only a guardian that stopped reading (SIGSTOP) lets the pipe fill (64 KiB, over 4,000 runs
            # between two reads); the worker must not block.
            logger.warning("the run guardian is not reading; process group changes were not passed on")

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
