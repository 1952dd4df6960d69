"""Celery 5 with a Redis broker, installed into its own virtual environment under bench/.venv-celery so
it never touches taskyard's dependencies. Its task runs the same no-op shell command as taskyard's.

Celery and redis-py live only in that venv, so everything that speaks to them runs in a driver process there
(DRIVER below, one JSON command per line); this module starts and stops the workers itself and does the timing
and memory measurement from the caller's side. Redis database 15 is the peer's own: the Celery queue, results
and the `bench:*` keys there are cleared before every measurement.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from bench._report import percentile
from bench.peers._peer_procs import JsonLineDriver, stop_all, tail

VENV = Path(__file__).resolve().parent.parent / ".venv-celery"
REDIS_URL = "redis://127.0.0.1:6379/15"
POOLS = ("prefork", "threads")
READY_TIMEOUT = 60.0

APP = textwrap.dedent('''
    import subprocess
    import time

    import redis
    from celery import Celery
    from celery.signals import task_failure, task_success

    BROKER = "{broker}"
    SETTLED, FAILED, TARGET = "bench:settled", "bench:failed", "bench:target"
    FIRST, FINISHED, STARTS = "bench:first", "bench:finished", "bench:starts"

    app = Celery("bench", broker=BROKER, backend=BROKER)
    app.conf.worker_prefetch_multiplier = 4
    app.conf.task_acks_late = False
    app.conf.broker_connection_retry_on_startup = True

    @app.task
    def noop():
        subprocess.run(["true"], check=True)

    @app.task
    def probe(sample):
        started = time.time()  # first thing in the body: this is "the run started"
        client().hset(STARTS, sample, repr(started))
        subprocess.run(["true"], check=True)

    _client = None
    _target = None

    def client():
        # One per process: prefork children are forked after import, so a client made at import would be shared.
        global _client
        if _client is None:
            _client = redis.Redis.from_url(BROKER)
        return _client

    def _settled(sender, failed):
        # task_success/task_failure fire after the result is stored, so the counter means "result is in", and
        # the driver waits on one list push instead of fetching every result.
        global _target
        if getattr(sender, "name", None) != noop.name:
            return
        r = client()
        if failed:
            r.incr(FAILED)
        n = r.incr(SETTLED)
        now = time.time()
        if n == 1:
            r.set(FIRST, repr(now))
        if _target is None:
            _target = int(r.get(TARGET) or 0)  # set before the workers start, fixed for their lifetime
        if n == _target:
            r.rpush(FINISHED, repr(now))

    @task_success.connect
    def _on_success(sender=None, **kwargs):
        _settled(sender, False)

    @task_failure.connect
    def _on_failure(sender=None, **kwargs):
        _settled(sender, True)
''')

DRIVER = textwrap.dedent('''
    import json
    import sys
    import time
    import traceback

    sys.path.insert(0, sys.argv[1])
    replies = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the reply stream

    import bench_app as b

    # The driver never reads results; with the Redis backend on, every send would also subscribe it to the
    # task's result channel. Workers still store results: that follows the message, not the sender's app.
    b.app.conf.result_backend = "disabled"
    r = b.client()

    def reset(cmd):
        purged = b.app.control.purge()
        patterns = ["celery", "celery\\x06\\x16*", "celery-task-meta-*", "unacked*", "bench:*"]
        keys = {key for pattern in patterns for key in r.scan_iter(pattern, count=1000)}
        for i in range(0, len(keys), 1000):
            r.delete(*list(keys)[i:i + 1000])
        return {"purged": purged, "deleted": len(keys)}

    def enqueue(cmd):
        n = cmd["n"]
        r.set(b.TARGET, n)
        started = time.perf_counter()
        # One producer for the whole loop: one connection, no per-send pool checkout.
        with b.app.producer_or_acquire() as producer:
            for _ in range(n):
                b.noop.apply_async(producer=producer)
        seconds = time.perf_counter() - started
        queued = r.llen("celery")
        if queued != n:
            raise RuntimeError(f"{queued} messages queued, expected {n}")
        return {"seconds": seconds}

    def wait_done(cmd):
        got = r.blpop(b.FINISHED, timeout=cmd["timeout"])
        first = r.get(b.FIRST)
        return {"finished": float(got[1]) if got else None, "first": float(first) if first else None,
                "settled": int(r.get(b.SETTLED) or 0), "failed": int(r.get(b.FAILED) or 0)}

    def ping(cmd):
        answers = b.app.control.ping(timeout=cmd["timeout"])
        return {"ok": any(name.startswith(cmd["prefix"]) for answer in answers for name in answer)}

    def wait_starts(count, timeout):
        deadline = time.monotonic() + timeout
        while r.hlen(b.STARTS) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {r.hlen(b.STARTS)} of {count} probes started within {timeout} s")
            time.sleep(0.02)

    def latency(cmd):
        samples, rate = cmd["samples"], cmd["rate"]
        # One probe first so the driver's broker connection exists before the first timed send; then idle again.
        b.probe.apply_async(args=["warmup"])
        wait_starts(1, 30)
        time.sleep(1.0)
        sends = []
        origin = time.perf_counter()
        for i in range(samples):
            # A fixed schedule, not sleep(1/rate) after each send, so the rate holds whatever a send costs.
            delay = origin + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sends.append(time.time())
            b.probe.apply_async(args=[i])
        wait_starts(samples + 1, cmd["timeout"])
        starts = r.hgetall(b.STARTS)
        return {"ms": [(float(starts[str(i).encode()]) - sent) * 1000 for i, sent in enumerate(sends)]}

    COMMANDS = {"reset": reset, "enqueue": enqueue, "wait_done": wait_done, "ping": ping, "latency": latency}

    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            reply = COMMANDS[cmd["cmd"]](cmd)
        except Exception:
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\\n")
        replies.flush()
''')


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"  # a venv whose install was interrupted has a python but no celery
    if marker.exists():
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "celery[redis]>=5.3,<6"], check=True,
                       timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"installing Celery into {VENV} took longer than {exc.timeout:.0f} s") from exc
    marker.touch()
    return python


def _prepare(home: Path) -> tuple[Path, JsonLineDriver]:
    python = ensure_venv()
    home.mkdir(parents=True, exist_ok=True)
    (home / "bench_app.py").write_text(APP.format(broker=REDIS_URL))
    driver = JsonLineDriver([str(python), "-c", DRIVER, str(home)], cwd=home, env=_env(home),
                            log=home / "driver.log")
    try:
        driver.request(30, cmd="reset")
    except BaseException:
        driver.close()
        raise
    return python, driver


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(home)}


def _start_worker(python: Path, home: Path, name: str, pool: str, concurrency: int) -> subprocess.Popen[bytes]:
    log = home / f"worker-{name}.log"
    with log.open("wb") as out:
        # Mingle and gossip are cluster chatter the benchmark does not need; mingle alone holds each worker
        # about a second at startup, which would count against Celery in the throughput clock.
        return subprocess.Popen([str(python), "-m", "celery", "-A", "bench_app", "worker", "-P", pool,
                                 "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "WARNING",
                                 "--without-mingle", "--without-gossip"],
                                cwd=home, env=_env(home), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _check_alive(procs: list[subprocess.Popen[bytes]], home: Path, names: list[str]) -> None:
    for proc, name in zip(procs, names, strict=True):
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker {name} exited with {proc.returncode}: "
                               f"{tail(home / f'worker-{name}.log')}")


def _wait_ready(driver: JsonLineDriver, proc: subprocess.Popen[bytes], home: Path, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if driver.request(10, cmd="ping", prefix=f"{name}@", timeout=0.5)["ok"]:
            return
        _check_alive([proc], home, [name])
    raise RuntimeError(f"celery worker {name} did not answer ping within {READY_TIMEOUT:.0f} s: "
                       f"{tail(home / f'worker-{name}.log')}")


def _finish(driver: JsonLineDriver, procs: list[subprocess.Popen[bytes]]) -> None:
    stop_all(procs)
    with contextlib.suppress(RuntimeError):
        driver.request(30, cmd="reset")  # leave db 15 tidy; the next measurement resets anyway
    driver.close()


def throughput(home: Path, *, runs: int, workers: int, concurrency: int, pool: str = "prefork") -> dict[str, Any]:
    """`runs` no-op tasks enqueued first, then `workers` workers started; the clock runs from their launch (as
    for taskyard's workers) until the last task's result is stored, as stamped by the worker that stored it."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
    python, driver = _prepare(home)
    token = secrets.token_hex(3)
    names = [f"tp{i}-{token}" for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        driver.request(max(60, runs / 100), cmd="enqueue", n=runs)
        limit = max(120, runs / 5)
        launched = time.time()  # wall clock: the finish time comes from a worker process
        deadline = time.monotonic() + limit
        procs = [_start_worker(python, home, name, pool, concurrency) for name in names]
        while True:
            # Short blocking waits so a worker that dies is noticed at once rather than at the deadline.
            done = driver.request(10, cmd="wait_done", timeout=1)
            if done["finished"] is not None:
                break
            _check_alive(procs, home, names)
            if time.monotonic() > deadline:
                raise RuntimeError(f"celery settled {done['settled']} of {runs} runs in {limit:.0f} s")
    finally:
        _finish(driver, procs)
    seconds = done["finished"] - launched
    return {"runs": runs, "seconds": round(seconds, 3), "runs_per_second": round(runs / seconds, 1), "pool": pool,
            "workers": workers, "concurrency": concurrency, "failed": done["failed"],
            "first_result_seconds": round(done["first"] - launched, 3)}


def latency(home: Path, *, samples: int, rate: float, concurrency: int = 4) -> dict[str, Any]:
    """Trigger-to-start with one idle, ready prefork worker: tasks sent one at a time at `rate` per second; each
    sample is the task body's first time.time() minus the driver's time.time() just before apply_async."""
    if samples < 1 or rate <= 0:
        raise ValueError("samples must be >= 1 and rate > 0")
    python, driver = _prepare(home)
    name = f"lat-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start_worker(python, home, name, "prefork", concurrency))
        _wait_ready(driver, procs[0], home, name)
        budget = samples / rate + 60
        waits: list[float] = driver.request(budget + 40, cmd="latency", samples=samples, rate=rate,
                                            timeout=60)["ms"]
    finally:
        _finish(driver, procs)
    return {"p50_ms": round(statistics.median(waits), 2), "p99_ms": round(percentile(waits, 0.99), 2),
            "samples": len(waits)}


def idle_memory(home: Path, *, concurrency: int) -> dict[str, Any]:
    """Resident memory of one ready, idle prefork worker's process tree, measured from outside with psutil.

    RSS counts pages shared between the parent and its forked children once per process, so the sum overstates
    what the tree really holds; `pss_mb` (proportional set size) splits shared pages and is given beside it."""
    python, driver = _prepare(home)
    name = f"mem-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start_worker(python, home, name, "prefork", concurrency))
        _wait_ready(driver, procs[0], home, name)
        time.sleep(2)  # let startup garbage settle, as an idle worker would be
        _check_alive(procs, home, [name])
        main = psutil.Process(procs[0].pid)
        tree = [main, *main.children(recursive=True)]
        rss = [p.memory_info().rss for p in tree]
        try:
            pss: float | None = sum(p.memory_full_info().pss for p in tree) / 2**20
        except (psutil.AccessDenied, AttributeError):
            pss = None  # smaps unreadable or not Linux
    finally:
        _finish(driver, procs)
    return {"rss_mb": round(sum(rss) / 2**20, 1), "processes": len(tree), "concurrency": concurrency,
            "main_rss_mb": round(rss[0] / 2**20, 1), "pss_mb": round(pss, 1) if pss is not None else None}
