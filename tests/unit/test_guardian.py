"""The run guardian as a real process: what it ends when its worker's pipe closes, and what it leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from taskyard.worker.executors import Guardian


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def spawned() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def spawn(command: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True,
                                env={**os.environ, **(env or {})})
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def has_guard_token(pid: int) -> bool:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return b"TASKYARD_GUARD" in handle.read()


def grandchild_of(proc: subprocess.Popen[bytes]) -> int:
    """The pid of `sleep` backgrounded by the run's shell (it stays in the run's group)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as handle:
            children = handle.read().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("the run's shell started no child")


def test_a_watched_group_ends_with_the_pipe_and_a_released_one_does_not(spawned) -> None:
    guardian = Guardian(kill_grace_seconds=1)
    guardian.start()
    watched = spawned("sleep 60 & wait")
    released = spawned("sleep 60 & wait")
    guardian.watch(watched.pid)
    guardian.watch(released.pid)
    guardian.release(released.pid)
    background = grandchild_of(watched)

    guardian.stop()  # the worker's end of the pipe closes, as it does when the worker dies

    wait_until(lambda: watched.poll() is not None and not alive(background), 5, "the watched group to end")
    assert watched.returncode == -signal.SIGTERM
    assert released.poll() is None, "a released group is not the guardian's"


def test_a_run_started_but_never_told_is_found_by_its_token(spawned) -> None:
    guardian = Guardian(kill_grace_seconds=1)
    guardian.start()
    # The worker died between starting this run and telling the guardian about it.
    untold = spawned("sleep 60", env=guardian.env())
    stranger = spawned("sleep 60", env={"TASKYARD_GUARD": "someone-else"})
    wait_until(lambda: has_guard_token(untold.pid), 5, "the run to start")

    guardian.stop()

    wait_until(lambda: untold.poll() is not None, 5, "the untold run to end")
    assert stranger.poll() is None, "another worker's run must be left alone"


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(spawned) -> None:
    guardian = Guardian(kill_grace_seconds=0.3)
    guardian.start()
    stubborn = spawned("trap '' TERM; sleep 60 & wait; wait")
    guardian.watch(stubborn.pid)
    background = grandchild_of(stubborn)
    started = time.monotonic()

    guardian.stop()

    wait_until(lambda: stubborn.poll() is not None, 5, "the stubborn group to be killed")
    assert stubborn.returncode == -signal.SIGKILL
    assert not alive(background)
    assert time.monotonic() - started >= 0.3


def test_a_killed_guardian_is_replaced_and_told_every_running_group(spawned) -> None:
    guardian = Guardian(kill_grace_seconds=1)
    guardian.start()
    first = guardian.pid
    assert first is not None
    running = spawned("sleep 60")
    guardian.watch(running.pid)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not alive(first), 5, "the guardian to die")

    later = spawned("sleep 60")
    guardian.watch(later.pid)  # the write finds the pipe broken: a new guardian takes over both
    assert guardian.pid not in (None, first)

    guardian.stop()
    wait_until(lambda: running.poll() is not None and later.poll() is not None, 5, "both groups to end")


def test_the_guardian_leaves_with_its_worker_when_nothing_runs() -> None:
    guardian = Guardian(kill_grace_seconds=5)
    guardian.start()
    pid = guardian.pid
    assert pid is not None and alive(pid)
    started = time.monotonic()
    guardian.stop()
    assert not alive(pid)
    assert time.monotonic() - started < 2, "with no runs left there is no grace period to wait out"
