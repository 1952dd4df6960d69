"""The guardian's own program (see :mod:`.guardian`): reads the worker's pipe until it closes, then ends the
process groups it was told about and every process that carries the worker's guard token.

Run as ``python -I -S guardian_watch.py <token> <grace>``: it imports only what it needs from the standard
library, so the process costs a bare interpreter (~10 MB of its own) and starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

GUARD_ENV = "TASKYARD_GUARD"
_POLL_SECONDS = 0.05
# How often the guardian reads its pipe, which is also how long a dead worker's runs may outlive it.
_READ_EVERY_SECONDS = 0.2


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
