"""Functions called through ``python -m taskyard.worker.pyfunc`` by tests/unit/test_execution.py."""

from __future__ import annotations

import datetime
from typing import Any


def add(a: int, b: int) -> dict[str, Any]:
    print(f"adding {a} and {b}")
    return {"sum": a + b, "when": datetime.date(2024, 1, 2)}


def echo_args(*args: str, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def boom(reason: str = "kaboom") -> None:
    print("about to fail")
    raise ValueError(reason)


async def async_double(x: int) -> int:
    return x * 2
