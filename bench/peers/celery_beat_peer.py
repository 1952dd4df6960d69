"""Celery beat as the cron peer: one beat process with one schedule entry per task, publishing to Redis.

It runs in the Celery venv of celery_peer (same install, same `bench_app` and the same Redis database,
cleared before and after each measurement). No worker is started: the messages beat publishes stay queued,
and the queue length is checked against what beat recorded before it is cleared.

Beat runs the way a user would run it: `celery beat` with its default scheduler (PersistentScheduler, a
shelve file) and default settings, beat_max_loop_interval included (beat sleeps until its next due entry,
so lowering the cap would not make it fire sooner). Two things differ from a stock app, both in beat's
favour or neutral:

* beat's app has no result backend: beat only publishes, and with the Redis result backend configured,
  every send would also subscribe beat to that task's result channel;
* the scheduler class is a subclass of PersistentScheduler whose only addition is to note, after each
  successful publish, the entry, the slot it fired for and `time.time()` (one line appended to a file,
  line-buffered: a write(2) per fire).

Entries firing at second 0 of every minute use `crontab(minute="*")`; beat's crontab has minute granularity,
so every other offset (and periods shorter than a minute, used at smoke size) use `SecondOfPeriod`, a small
schedule class that fires `offset` seconds into each `period`-second block of the clock.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.peers import celery_peer
from bench.peers._peer_procs import stop, tail

READY_TIMEOUT = 180.0  # beat builds and pickles one entry per task before its first tick

BEAT_APP = textwrap.dedent('''
    import json
    import math
    import os
    import time
    from datetime import timedelta

    from celery.beat import PersistentScheduler
    from celery.schedules import BaseSchedule, crontab, schedstate

    from bench_app import app, noop

    HERE = os.path.dirname(os.path.abspath(__file__))
    app.conf.result_backend = "disabled"

    with open(os.path.join(HERE, "beat_plan.json")) as plan_file:
        PLAN = json.load(plan_file)
    PERIOD = PLAN["period"]
    OFFSETS = PLAN["offsets"]


    class SecondOfPeriod(BaseSchedule):
        """Due `offset` seconds into every `period`-second block of the clock."""

        def __init__(self, period, offset, nowfun=None, app=None):
            super().__init__(nowfun=nowfun, app=app)
            self.period, self.offset = period, offset

        def next_after(self, t):
            return (math.floor((t - self.offset) / self.period) + 1) * self.period + self.offset

        def remaining_estimate(self, last_run_at):
            due_at = self.next_after(self.maybe_make_aware(last_run_at).timestamp())
            return timedelta(seconds=max(0.0, due_at - time.time()))

        def is_due(self, last_run_at):
            now = time.time()
            due_at = self.next_after(self.maybe_make_aware(last_run_at).timestamp())
            if now >= due_at:
                return schedstate(True, self.next_after(now) - now)
            return schedstate(False, due_at - now)

        def __eq__(self, other):
            # Beat compares every entry with its previous copy on each tick to spot edits.
            if isinstance(other, SecondOfPeriod):
                return (self.period, self.offset) == (other.period, other.offset)
            return NotImplemented

        def __reduce__(self):
            return self.__class__, (self.period, self.offset)

        def __repr__(self):
            return f"<SecondOfPeriod {self.offset}/{self.period}s>"


    def _schedule(offset):
        return crontab(minute="*") if PLAN["crontab"] else SecondOfPeriod(PERIOD, offset)


    app.conf.beat_schedule = {f"cron-{i}": {"task": noop.name, "schedule": _schedule(offset)}
                              for i, offset in enumerate(OFFSETS)}


    class BenchScheduler(PersistentScheduler):
        def setup_schedule(self):
            super().setup_schedule()
            self._fired = open(os.path.join(HERE, "fired.log"), "a", buffering=1)
            with open(os.path.join(HERE, "ready.tmp"), "w") as ready:
                ready.write(repr(time.time()))
            os.replace(os.path.join(HERE, "ready.tmp"), os.path.join(HERE, "ready"))

        def apply_async(self, entry, producer=None, advance=True, **kwargs):
            decided = time.time()
            result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
            published = time.time()
            if entry.name.startswith("cron-"):
                index = int(entry.name[5:])
                offset = OFFSETS[index]
                # The latest slot at or before the decision, as a catch-up "latest" policy would name it:
                # two publishes within one period land on the same slot and show as a duplicate.
                slot = math.floor((decided - offset) / PERIOD) * PERIOD + offset
                self._fired.write(f"{index} {slot} {published!r}\\n")
            return result
''')

QUEUED = "import redis, sys; print(redis.Redis.from_url(sys.argv[1]).llen('celery'))"


@dataclass
class Beat:
    """A running beat process; `fired()` is (entry index, slot, published at) for every publish so far."""

    proc: subprocess.Popen[bytes]
    home: Path
    ready_at: float
    queued: int | None = None  # messages in the Celery queue once the measurement ended

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"celery beat exited with {self.proc.returncode}: {tail(self.home / 'beat.log')}")

    def fired(self) -> list[tuple[int, float, float]]:
        try:
            text = (self.home / "fired.log").read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:  # a line being written while read is left for the next read
                found.append((int(parts[0]), float(parts[1]), float(parts[2])))
        return found


@contextlib.contextmanager
def beat(home: Path, *, period: int, offsets: list[int], crontab: bool) -> Iterator[Beat]:
    """Beat with entry i due `offsets[i]` seconds into each `period` (crontab(minute='*') if `crontab`)."""
    python, driver = celery_peer._prepare(home)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("fired.log", "ready", "beat-schedule", "beat-schedule.db"):
            (home / name).unlink(missing_ok=True)
        (home / "beat_app.py").write_text(BEAT_APP)
        (home / "beat_plan.json").write_text(json.dumps({"period": period, "offsets": offsets,
                                                          "crontab": crontab}))
        with (home / "beat.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [str(python), "-m", "celery", "-A", "beat_app", "beat", "-S", "beat_app:BenchScheduler",
                 "-s", str(home / "beat-schedule"), "--loglevel", "WARNING"],
                cwd=home, env=celery_peer._env(home), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        handle = Beat(procs[0], home, _wait_ready(procs[0], home))
        yield handle
        handle.check()
        stop(procs[0])  # before counting, so nothing is published between the count and the reset
        done = subprocess.run([str(python), "-c", QUEUED, celery_peer.REDIS_URL], capture_output=True,
                              text=True, timeout=30, check=True)
        handle.queued = int(done.stdout.strip())
    finally:
        celery_peer._finish(driver, procs)


def _wait_ready(proc: subprocess.Popen[bytes], home: Path) -> float:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return float((home / "ready").read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"celery beat exited with {proc.returncode}: {tail(home / 'beat.log')}")
        time.sleep(0.05)
    raise RuntimeError(f"celery beat did not load its schedule in {READY_TIMEOUT:.0f} s: {tail(home / 'beat.log')}")
