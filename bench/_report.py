"""Figures of the benchmark suite: taskyard's beside a peer's measured in the same invocation, with the
ratio and the spread over repetitions; printed as one table and written as JSON under bench/results/."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Measured:
    """The median of repeated measurements and their spread."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> Measured:
        ordered = sorted(values)
        return cls(round(statistics.median(ordered), 2), round(ordered[0], 2), round(ordered[-1], 2),
                   tuple(round(v, 2) for v in values))

    def spread(self) -> str:
        return f"{self.low:g}-{self.high:g}" if len(self.values) > 1 else "-"


@dataclass(frozen=True)
class Figure:
    """One line of the table. `ratio` is taskyard / peer; `better` says which way wins."""

    benchmark: str
    case: str
    unit: str
    taskyard: Measured
    peer_name: str | None = None
    peer: Measured | None = None
    better: str = "higher"  # or "lower"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer is None or not self.peer.median:
            return None
        return round(self.taskyard.median / self.peer.median, 2)


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)

    def print(self) -> None:
        header = (f"{'benchmark':<12}{'case':<42}{'taskyard':>12}{'spread':>16}{'peer':>34}{'peer figure':>13}"
                  f"{'spread':>16}{'ratio':>8}  better")
        print("\n" + header)
        print("-" * len(header))
        for f in self.figures:
            peer = f.peer.median if f.peer else "-"
            peer_spread = f.peer.spread() if f.peer else "-"
            ratio = f"{f.ratio:g}x" if f.ratio is not None else "-"
            print(f"{f.benchmark:<12}{f.case[:41]:<42}{f.taskyard.median:>12g}{f.taskyard.spread():>16}"
                  f"{(f.peer_name or '-')[:33]:>34}{peer!s:>13}{peer_spread:>16}{ratio:>8}  {f.better} {f.unit}"
                  + (f"  ({f.note})" if f.note else ""))

    def write(self, name: str, args: dict[str, Any]) -> Path:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        body = {"machine": machine(), "args": args,
                "figures": [{**asdict(f), "ratio": f.ratio} for f in self.figures], "raw": self.raw}
        out.write_text(json.dumps(body, indent=2, default=str))
        return out


def repeat(times: int, measure: Callable[[], float]) -> Measured:
    return Measured.of([measure() for _ in range(max(1, times))])


def percentile(values: list[float], q: float) -> float:
    """The value at rank q (0-1) of the sorted values: p99 of 100 values is the 99th."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def machine() -> dict[str, Any]:
    return {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "system": platform.platform()}
