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
``os.write`` per run and start, and about 9 MB once per worker.

This file is also the guardian's program (``python -I -S guardian.py``): the top-level imports are the
standard library only, so it starts without site-packages and without importing taskyard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time

GUARD_ENV = "TASKYARD_GUARD"
_POLL_SECONDS = 0.05
# How often the guardian reads its pipe, which is also how long a dead worker's runs may outlive it.
_READ_EVERY_SECONDS = 0.2

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
                [sys.executable, "-I", "-S", __file__, self.token, str(self.kill_grace_seconds)],
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


# --------------------------------------------------------------------------------------------------
# The guardian process


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[2])


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _live_groups(groups: set[int]) -> set[int]:
    """The groups that still have a member that is not a zombie (an orphan whose new parent never reaps
    it stays a zombie forever, and must not hold up the exit)."""
    live = set()
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] in groups and stat[0] != "Z":
            live.add(stat[1])
    return live


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)


def _end_everything(groups: set[int], token: str, grace: float) -> None:
    marker = f"{GUARD_ENV}={token}".encode()
    me = os.getpid()
    strays = {pid for pid in _pids() if pid != me and _carries(pid, marker)}
    for pid in strays:
        stat = _proc_stat(pid)
        if stat is not None:
            groups.add(stat[1])
    groups.discard(os.getpgid(0))
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    for pid in strays:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        groups = _live_groups(groups)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for pid in strays:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def watch(token: str, grace: float) -> None:
    """Reads ``+pgid``/``-pgid`` lines from stdin until end of file, then ends what is left.

    It reads on a clock rather than blocking on the pipe: a reader blocked on a pipe is woken by every
    write, and being switched to on each run's start and end cost the worker more than the rest of the
    bookkeeping. The pipe holds what is written in between (a run's two lines are ~16 bytes)."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    os.set_blocking(0, False)
    groups: set[int] = set()
    pending = b""
    closed = False
    while not closed:
        time.sleep(_READ_EVERY_SECONDS)
        while True:
            try:
                chunk = os.read(0, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                closed = True
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if len(line) < 2 or not line[1:].isdigit():
                    continue
                pgid = int(line[1:])
                if line[:1] == b"+":
                    groups.add(pgid)
                else:
                    groups.discard(pgid)
    _end_everything(groups, token, grace)


if __name__ == "__main__":
    watch(sys.argv[1], float(sys.argv[2]))
