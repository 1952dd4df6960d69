"""The benchmark suite: taskyard beside its peers, measured in one invocation on this machine.

    python -m bench                      # every benchmark at full size
    python -m bench throughput latency   # some of them
    python -m bench --smoke              # the smallest sizes (CI runs this: it proves the suite runs)

Each benchmark starts what it needs on loopback (taskyard servers and workers, the peers and their
brokers; the peers are installed from PyPI into their own virtual environments under bench/.venv-*),
prints taskyard's figure beside the peer's with their ratio and spread (the median of --repeat runs),
and the whole table is written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import cron, ingest, latency, memory, reads, scaling, throughput
from bench._context import Context
from bench._report import Report

BENCHMARKS: dict[str, Callable[[Context, Report, argparse.Namespace], None]] = {
    "throughput": lambda ctx, report, args: throughput.run(ctx, report, runs=args.runs),
    "latency": lambda ctx, report, args: latency.run(ctx, report, samples=args.samples, rate=args.rate),
    "ingest": lambda ctx, report, args: ingest.run(ctx, report, events=args.events),
    "memory": lambda ctx, report, args: memory.run(ctx, report),
    "reads": lambda ctx, report, args: reads.run(ctx, report, stored=args.stored),
    "cron": lambda ctx, report, args: cron.run(ctx, report, tasks=args.tasks),
    "scaling": lambda ctx, report, args: scaling.run(ctx, report, runs=args.runs),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], metavar="benchmark",
                        help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per figure (median and spread)")
    parser.add_argument("--databases", default="postgres,sqlite")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, help="throughput, scaling: runs per measurement (20,000; 3,000)")
    parser.add_argument("--samples", type=int, help="latency: triggers per measurement (default 1,000)")
    parser.add_argument("--rate", type=float, default=100.0, help="latency: triggers per second")
    parser.add_argument("--events", type=int, help="ingest: events per measurement (default 50,000)")
    parser.add_argument("--stored", type=int, help="reads: runs stored for the large size (default 1,000,000)")
    parser.add_argument("--tasks", type=int, help="cron: scheduled tasks per case (default 10,000)")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as tmp:
        ctx = Context(root=Path(tmp), postgres_url=args.postgres_url,
                      databases=tuple(d.strip() for d in args.databases.split(",") if d.strip()),
                      repeat=1 if args.smoke else args.repeat, smoke=args.smoke, workers=args.workers,
                      concurrency=args.concurrency)
        for name in names:
            print(f"== {name}", flush=True)
            BENCHMARKS[name](ctx, report, args)
    report.print()
    out = report.write("suite" if len(names) > 1 else names[0], vars(args))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
