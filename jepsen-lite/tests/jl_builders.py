"""Compact construction of hand-made histories for the checker tests."""

from __future__ import annotations

from typing import Any

from jepsen_lite.history import NEMESIS, History

_NO_RESULT = object()


class Builder:
    """``op(...)`` adds an invoke and (unless ``type=None``) its completion; ``build()`` sorts by time.

    Events at the same instant keep insertion order, so an op's completion precedes the next invoke of
    the same process when ``end == next start``.
    """

    def __init__(self) -> None:
        self._events: list[tuple[float, int, dict[str, Any]]] = []

    def _add(self, time: float, row: dict[str, Any]) -> None:
        self._events.append((time, len(self._events), {**row, "time": time}))

    def op(self, process: int, f: str, value: Any, start: float, end: float | None = None,
           type: str | None = "ok", node: str | None = "n1", result: Any = _NO_RESULT,
           **server: Any) -> Builder:
        invoke_value = None if f in ("read", "read-all") else value
        self._add(start, {"process": process, "type": "invoke", "f": f, "value": invoke_value,
                          "node": node})
        if f == "cas" and type == "fail":  # the workload's wording for a compare the store refused
            server.setdefault("error", "compare failed: (built)")
        if type is not None:
            out = value if result is _NO_RESULT else result
            self._add(end if end is not None else start + 0.01,
                      {"process": process, "type": type, "f": f, "value": out, "node": node, **server})
        return self

    def nemesis(self, f: str, phase: Any, time: float) -> Builder:
        self._add(time, {"process": NEMESIS, "type": "info", "f": f, "value": phase})
        return self

    def build(self) -> History:
        rows = [row for _, _, row in sorted(self._events, key=lambda e: (e[0], e[1]))]
        return History.from_dicts({**row, "index": i} for i, row in enumerate(rows))
