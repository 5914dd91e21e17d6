"""Polling for a condition with a deadline: the one way tests wait (never a bare sleep as synchronisation).
It used to be written out in four test modules with three different failure messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05, *,
               tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Call ``predicate`` every ``interval_s`` until it returns something truthy, and return that; after
    ``timeout_s`` raise TimeoutError naming ``what`` and the last value. Exceptions of the ``tolerate``
    types count as a falsy answer (e.g. a node that is restarting refuses connections)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = predicate()
        except tolerate as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)
