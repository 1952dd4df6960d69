"""Cron: N tasks due at the same second, and N spread over the seconds of a minute; firing lag, missed and
duplicated slots, beside Celery beat with the same schedules (bench/peers/celery_beat_peer.py).

    python -m bench cron [--tasks 10000] [--repeat 3]

Cases, each on a fresh taskyard server and database (and a fresh beat process):

* "same minute": every task is `* * * * *`, so all N are due at second 0 of each minute;
* "spread": task i is `* * * * * {i % 60}` (croniter's trailing seconds field), about N/60 due each second.

No workers run: the lag of a slot is the time from the slot to its run being fired, i.e. durably enqueued and
claimable.

* taskyard: a thread of this process polls the runs table every 10 ms on its own connection and stamps
  each run with the moment it first sees it, i.e. once its transaction has committed (at most one poll
  late). The scheduler creates a slot's runs up to a few seconds ahead of it with `available_at` at the
  slot (no claim takes them earlier), so a run is fired at the later of the two: the lag is
  max(seen, available_at) - slot, 0 for a run committed before its slot. The raw results keep what the
  figure leaves out: "committed" is seen minus the slot (negative: that far ahead), "recorded" is
  `created_at` minus the slot (one `now` per tick, written on every run of the tick, while the runs become
  visible only when the tick commits). On PostgreSQL the thread also LISTENs on the servers' wake-up
  channel: "woken" is, per distinct slot, the first wake-up it receives at or after the slot minus the
  slot, i.e. when a worker's long poll waiting for the slot is told to claim (the server wakes its own
  pollers at the same moment; SQLite's wake-up is in-process and not seen from here).
* Celery beat: `time.time()` just after beat's publish to Redis returned (see the peer's docstring). A
  publish counts for the entry's latest slot at or before it, as taskyard's catch-up "latest" names a late
  run's `scheduled_for`: a publish more than a period late shows as a missed slot plus a shorter lag.

One window is measured: the second whole period that starts at least `margin` seconds after every task
exists (for beat: after it loaded its schedule). The period before it is a warm-up with every task in place,
so both sides enter the window in the same state: idle if they keep up, carrying the previous period's
backlog if they do not (taskyard also fired partial sets while the tasks were being created, beat never
fires before its schedule is loaded; measuring the first period would compare a busy taskyard with an idle
beat). Every task has exactly one slot in the window. Collection ends
once every slot has fired and nothing came for SETTLE seconds, and at the latest one period after the
window closed (by then a catch-up "latest" policy, taskyard's default and beat's behaviour, has moved a
late task on to its next slot). missed = slots of the window never enqueued; duplicated = runs beyond the
first for a (task, slot). p50/p99 are over the slots that fired.

Smoke size (--smoke): 20 tasks and a 5-second period instead of a minute ("same" is `* * * * * 0,5,...,55`,
"spread" is task i at second i % 5 of every 5), so a run does not wait for minute boundaries; it proves the
benchmark runs, its figures are not claims.

Goal: p99 lag at most 200 ms, nothing missed or duplicated.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import httpx

from bench import _procs
from bench._context import DATABASE_NAMES, Context
from bench._report import Figure, Measured, Report, percentile
from bench.peers import celery_beat_peer, celery_peer
from bench.peers._peer_procs import tail

CASES = ("same minute", "spread")
CREATES_IN_FLIGHT = 32
POLL_INTERVAL = 0.01
GOAL_P99_MS = 200.0
PEER = "Celery beat + Redis"


@dataclass(frozen=True)
class Plan:
    case: str
    tasks: int
    period: int  # seconds; divides 60
    margin: float  # seconds between "everything exists" and the warm-up period's start, at least
    settle: float  # seconds without a new firing before a complete window is closed

    def offset(self, index: int) -> int:
        return 0 if self.case == "same minute" else index % self.period

    def expression(self, index: int) -> str:
        if self.period == 60:
            return "* * * * *" if self.case == "same minute" else f"* * * * * {self.offset(index)}"
        return "* * * * * " + ",".join(str(s) for s in range(self.offset(index), 60, self.period))


class Firing(NamedTuple):
    task: int  # the task's (or beat entry's) position in the plan
    slot: float  # epoch seconds
    at: float  # epoch seconds at which it was fired: durably enqueued and claimable
    recorded: float | None = None  # taskyard only: the run's created_at
    committed: float | None = None  # taskyard only: when the observer first saw it (it may precede the slot)


class Side(Protocol):
    @property
    def ready_at(self) -> float: ...

    def check(self) -> None: ...

    def fired(self) -> list[Firing]: ...


# --- taskyard ---------------------------------------------------------------------------------------------


def _epoch(value: Any) -> float:
    """A timestamp column: aware datetimes from PostgreSQL, naive UTC text from SQLite."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return float((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


class Observer(threading.Thread):
    """Stamps each run with the first moment a query on another connection sees it: its commit, at most one
    poll late. Only the cron tick creates runs here (no workers, no triggers), and it runs one transaction at
    a time, so ids become visible in order and `id > last seen` misses none. On PostgreSQL it waits for the
    next poll on a connection that LISTENs to the wake-up channel, and stamps each wake-up as it arrives."""

    def __init__(self, database_url: str | None, sqlite_path: Path) -> None:
        super().__init__(name="cron-observer", daemon=True)
        self.database_url, self.sqlite_path = database_url, sqlite_path
        self.rows: list[tuple[int, float, float, float, float]] = []  # task id, slot, created_at, seen, available
        self.wakes: list[float] = []  # when each wake-up (NOTIFY) arrived
        self.error: BaseException | None = None
        self.polls = 0
        self.max_gap = 0.0  # seconds between two polls, at worst: on a busy machine stamps are that coarse
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def _connect(self) -> tuple[Any, str]:
        if self.database_url is None:
            return sqlite3.connect(self.sqlite_path, isolation_level=None), "?"
        import psycopg

        return psycopg.connect(self.database_url, autocommit=True), "%s"

    def run(self) -> None:
        try:
            conn, mark = self._connect()
            query = (f"SELECT id, task_id, scheduled_for, created_at, available_at FROM runs WHERE id > {mark} "
                     "AND scheduled_for IS NOT NULL ORDER BY id")
            last, previous = 0, time.time()
            with contextlib.closing(conn), self._listener() as pause:
                while not self._halt.is_set():
                    seen = time.time()  # the query's snapshot is taken just after: a commit it sees came before
                    rows = conn.execute(query, (last,)).fetchall()
                    self.polls += 1
                    self.max_gap, previous = max(self.max_gap, seen - previous), seen
                    if rows:
                        last = int(rows[-1][0])
                        with self._lock:
                            self.rows.extend((int(r[1]), _epoch(r[2]), _epoch(r[3]), seen, _epoch(r[4]))
                                             for r in rows)
                    pause()
        except BaseException as exc:  # surfaced by check(): a dead observer must fail the benchmark
            self.error = exc

    @contextlib.contextmanager
    def _listener(self) -> Iterator[Callable[[], None]]:
        """What waits between two polls: on PostgreSQL, a connection listening to the wake-ups, stamping each."""
        if self.database_url is None:
            yield lambda: self._halt.wait(POLL_INTERVAL)
            return
        import psycopg

        from taskyard.storage.wakeup import CHANNEL

        with psycopg.connect(self.database_url, autocommit=True) as listening:
            listening.execute(f"LISTEN {CHANNEL}")

            def pause() -> None:
                for _ in listening.notifies(timeout=POLL_INTERVAL):
                    arrived = time.time()
                    with self._lock:
                        self.wakes.append(arrived)

            yield pause

    def snapshot(self) -> list[tuple[int, float, float, float, float]]:
        with self._lock:
            return list(self.rows)

    def wake_ups(self) -> list[float]:
        with self._lock:
            return list(self.wakes)

    def halt(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class Taskyard:
    proc: Any
    log: Path
    observer: Observer
    indexes: dict[int, int]  # task id -> index in the plan
    ready_at: float = field(default_factory=time.time)

    def check(self) -> None:
        if self.observer.error is not None:
            raise RuntimeError(f"the runs observer failed: {self.observer.error!r}")
        if not self.observer.is_alive():
            raise RuntimeError("the runs observer stopped")
        if self.proc.poll() is not None:
            raise RuntimeError(f"taskyard server exited with {self.proc.returncode}: {tail(self.log)}")

    def fired(self) -> list[Firing]:
        # Fired once both committed (seen) and claimable (available_at: the slot for a run created ahead).
        return [Firing(self.indexes[task_id], slot, max(seen, available), created, seen)
                for task_id, slot, created, seen, available in self.observer.snapshot() if task_id in self.indexes]


async def create_tasks(url: str, plan: Plan) -> dict[int, int]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        semaphore = asyncio.Semaphore(CREATES_IN_FLIGHT)

        async def one(index: int) -> tuple[int, int]:
            async with semaphore:
                response = await client.post("/api/tasks", json={
                    "name": f"cron-{index}", "task_type": "shell", "command": "true", "retry_count": 0,
                    "schedule": plan.expression(index)})
                if response.status_code != 201:
                    raise RuntimeError(f"creating task {index}: {response.status_code} {response.text[:500]}")
                return int(response.json()["data"]["id"]), index

        limit = max(120.0, plan.tasks / 20)
        try:
            pairs = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(plan.tasks))), limit)
        except TimeoutError:
            raise RuntimeError(f"creating {plan.tasks} tasks took longer than {limit:.0f} s") from None
    return dict(pairs)


@contextlib.contextmanager
def taskyard(ctx: Context, database: str, plan: Plan, attempt: int) -> Iterator[Taskyard]:
    home = ctx.home(f"cron-{database}-{plan.case.replace(' ', '-')}-{attempt}")  # a fresh SQLite file too
    with _procs.database_for(database, ctx.postgres_url) as database_url:
        proc, url = _procs.start_server(home, database_url)
        observer = Observer(database_url, home / "taskyard.db")
        try:
            created = time.monotonic()
            indexes = asyncio.run(create_tasks(url, plan))
            print(f"   taskyard {DATABASE_NAMES[database]}: {plan.tasks} tasks created in "
                  f"{time.monotonic() - created:.1f} s", flush=True)
            observer.start()
            yield Taskyard(proc, home / f"server-{url.rsplit(':', 1)[1]}.log", observer, indexes)
        finally:
            observer.halt()
            _procs.stop(proc)


# --- measuring --------------------------------------------------------------------------------------------


def window_start(plan: Plan, ready_at: float) -> float:
    warmup = math.ceil((ready_at + plan.margin) / plan.period) * plan.period
    return float(warmup + plan.period)


def collect(side: Side, plan: Plan) -> tuple[float, list[Firing]]:
    """Wait out the window (bounded: one period after it closes at the latest); the window and every firing."""
    window = window_start(plan, side.ready_at)
    end = window + plan.period
    expected = {(i, window + plan.offset(i)) for i in range(plan.tasks)}
    while True:
        side.check()
        now = time.time()
        if now >= end + plan.period:
            break
        if now >= end + plan.settle:
            fired = side.fired()
            got = {(f.task, f.slot): f.at for f in fired if (f.task, f.slot) in expected}
            if len(got) == len(expected) and now >= max(got.values()) + plan.settle:
                break
        time.sleep(min(0.25, max(0.01, window - time.time())))
    side.check()
    return window, side.fired()


def tally(plan: Plan, window: float, fired: list[Firing]) -> dict[str, Any]:
    first: dict[tuple[int, float], Firing] = {}
    in_window = stray = 0
    for f in sorted(fired, key=lambda f: f.at):
        if not window <= f.slot < window + plan.period:
            continue
        in_window += 1
        if f.slot != window + plan.offset(f.task):
            stray += 1  # a slot the task's schedule does not have
        else:
            first.setdefault((f.task, f.slot), f)
    if not first:
        raise RuntimeError(f"no slot of the window starting {_iso(window)} fired ({len(fired)} firings seen "
                           "in all)")
    lags = [(f.at - f.slot) * 1000 for f in first.values()]
    result: dict[str, Any] = {
        "window": _iso(window), "tasks": plan.tasks, "period_s": plan.period, "fired": len(first),
        "missed": plan.tasks - len(first), "duplicated": in_window - stray - len(first), "stray": stray,
        "p50_ms": round(percentile(lags, 0.5), 2), "p99_ms": round(percentile(lags, 0.99), 2),
        "max_ms": round(max(lags), 2),
        "last_enqueued_after_s": round(max(f.at for f in first.values()) - window, 3),
    }
    recorded = [(f.recorded - f.slot) * 1000 for f in first.values() if f.recorded is not None]
    if recorded:
        result["recorded_p50_ms"] = round(percentile(recorded, 0.5), 2)
        result["recorded_p99_ms"] = round(percentile(recorded, 0.99), 2)
        # Runs sharing a created_at were written by one tick (one `now` per tick).
        result["ticks"] = len({f.recorded for f in first.values()})
    committed = [(f.committed - f.slot) * 1000 for f in first.values() if f.committed is not None]
    if committed:
        result["committed_p50_ms"] = round(percentile(committed, 0.5), 2)
        result["committed_p99_ms"] = round(percentile(committed, 0.99), 2)
        result["committed_max_ms"] = round(max(committed), 2)
    return result


def woken(window_slots: set[float], wakes: list[float]) -> dict[str, Any]:
    """Per distinct slot, the first wake-up at or after it, minus the slot (ms); slots none came for."""
    ordered = sorted(wakes)
    lags, unwoken = [], 0
    for slot in sorted(window_slots):
        at = bisect.bisect_left(ordered, slot)
        if at == len(ordered):
            unwoken += 1
        else:
            lags.append((ordered[at] - slot) * 1000)
    if not lags:
        return {"woken_slots": 0, "unwoken_slots": unwoken}
    return {"woken_slots": len(lags), "unwoken_slots": unwoken, "woken_p50_ms": round(percentile(lags, 0.5), 2),
            "woken_p99_ms": round(percentile(lags, 0.99), 2), "woken_max_ms": round(max(lags), 2)}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def measure_taskyard(ctx: Context, database: str, plan: Plan, attempt: int) -> dict[str, Any]:
    with taskyard(ctx, database, plan, attempt) as side:
        window, fired = collect(side, plan)
        polls, gap, wakes = side.observer.polls, side.observer.max_gap, side.observer.wake_ups()
    result = {**tally(plan, window, fired), "observer_polls": polls, "observer_max_gap_ms": round(gap * 1000, 1)}
    if side.observer.database_url is not None:
        result.update(woken({window + plan.offset(i) for i in range(plan.tasks)}, wakes))
    return result


def measure_beat(ctx: Context, plan: Plan, attempt: int) -> dict[str, Any]:
    home = ctx.home(f"cron-celery-beat-{plan.case.replace(' ', '-')}-{attempt}")
    offsets = [plan.offset(i) for i in range(plan.tasks)]
    started = time.time()
    with celery_beat_peer.beat(home, period=plan.period, offsets=offsets,
                               crontab=plan.case == "same minute" and plan.period == 60) as beat:
        window, fired = collect(_BeatSide(beat), plan)
    published = len(beat.fired())
    if beat.queued is not None and beat.queued < published:
        # Only something else on the Celery peer's Redis database (another run's reset or worker) takes them.
        print(f"   warning: beat recorded {published} publishes but Redis holds {beat.queued} messages: "
              f"is another benchmark using {celery_peer.REDIS_URL}?", flush=True)
    return {**tally(plan, window, fired), "published_in_all": published, "queued_in_redis": beat.queued,
            "load_s": round(beat.ready_at - started, 1)}


@dataclass
class _BeatSide:
    beat: celery_beat_peer.Beat

    @property
    def ready_at(self) -> float:
        return self.beat.ready_at

    def check(self) -> None:
        self.beat.check()

    def fired(self) -> list[Firing]:
        return [Firing(*f) for f in self.beat.fired()]


# --- the benchmark ----------------------------------------------------------------------------------------


def worst(results: list[dict[str, Any]], key: str) -> int:
    return max(int(r[key]) for r in results)


def run(ctx: Context, report: Report, tasks: int | None = None) -> None:
    tasks = tasks or ctx.size(10_000, 20)
    period = 5 if ctx.smoke else 60
    raw: dict[str, Any] = {"tasks": tasks, "period_s": period, "goal_p99_ms": GOAL_P99_MS, "cases": {}}
    report.raw["cron"] = raw
    for case in CASES:
        plan = Plan(case, tasks, period, margin=1.0 if ctx.smoke else 2.0, settle=1.0 if ctx.smoke else 2.0)
        beat = []
        for attempt in range(ctx.repeat):
            beat.append(measure_beat(ctx, plan, attempt))
            _progress(f"Celery beat (schedule loaded in {beat[-1]['load_s']:g} s)", case, beat[-1])
        raw["cases"][case] = {"celery_beat": beat, "taskyard": {}}
        for database in ctx.databases:
            ours = []
            for attempt in range(ctx.repeat):
                ours.append(measure_taskyard(ctx, database, plan, attempt))
                _progress(f"taskyard {DATABASE_NAMES[database]}", case, ours[-1])
            raw["cases"][case]["taskyard"][database] = ours
            note = (f"missed {worst(ours, 'missed')} dup {worst(ours, 'duplicated')}; beat missed "
                    f"{worst(beat, 'missed')} dup {worst(beat, 'duplicated')}"
                    + (f"; worst of {ctx.repeat}" if ctx.repeat > 1 else ""))
            for q in ("p50_ms", "p99_ms"):
                report.add(Figure("cron", f"{DATABASE_NAMES[database]} {case} x{tasks} {q[:3]} lag", "ms",
                                  Measured.of([r[q] for r in ours]), PEER, Measured.of([r[q] for r in beat]),
                                  better="lower", note=note))


def _progress(who: str, case: str, result: dict[str, Any]) -> None:
    extra = "".join(f", {label} p50/p99 {result[f'{key}_p50_ms']:g}/{result[f'{key}_p99_ms']:g} ms"
                    for key, label in (("committed", "committed"), ("woken", "woken")) if f"{key}_p50_ms" in result)
    print(f"   {who} {case}: p50 {result['p50_ms']:g} ms, p99 {result['p99_ms']:g} ms, "
          f"missed {result['missed']}, duplicated {result['duplicated']}{extra}", flush=True)
