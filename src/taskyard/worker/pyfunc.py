"""Runs one Python function for a ``python`` task: ``python -m taskyard.worker.pyfunc pkg.module:function``.

Started by the python executor in the run's own process, so an import error, a crash or a hung
function only ever affects that run. Contract with the executor:

* ``TASKYARD_PARAMS`` (JSON object) supplies keyword arguments; extra command-line arguments after
  the target are passed positionally, as strings.
* The return value is written as ``json.dumps(value, default=str)`` to the file named by
  ``TASKYARD_RESULT_FILE`` (printed to stdout when that is unset, for running by hand).
* An exception prints its traceback to stderr and exits 1; the executor reports the traceback's
  last line. Usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

USAGE = "usage: python -m taskyard.worker.pyfunc package.module:function [positional args...]"


def _load_parameters() -> dict[str, Any]:
    raw = os.environ.get("TASKYARD_PARAMS", "").strip()
    if not raw:
        return {}
    try:
        parameters = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TASKYARD_PARAMS is not valid JSON: {exc}") from None
    if not isinstance(parameters, dict):
        raise ValueError(f"TASKYARD_PARAMS must be a JSON object, not {type(parameters).__name__}")
    return parameters


def _resolve(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"invalid target {target!r}; expected package.module:function")
    # The run's working directory is where users keep their task code.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def _write_result(value: Any) -> None:
    payload = json.dumps(value, default=str)
    path = os.environ.get("TASKYARD_RESULT_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(payload)
    else:
        print(payload)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    target, *positional = args
    try:
        parameters = _load_parameters()
    except ValueError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        function = _resolve(target)
        value = function(*positional, **parameters)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        _write_result(value)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        # Output from the function must be on the pipe before the executor sees the exit.
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
