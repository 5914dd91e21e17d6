"""Jepsen-shaped histories: one JSON object per line, read and written here, paired here.

Line shape (``Op``)::

    {"index": 7, "process": 3, "type": "invoke"|"ok"|"fail"|"info", "f": "insert",
     "value": 42, "time": 12.503, "node": "n1", ...op-specific fields...}

- ``index`` is unique and gives the order in which the harness recorded the events.
- ``time`` is the harness's monotonic clock in seconds; a completion is never earlier than its invoke.
- ``node`` is the node the client talked to; op-specific fields (``primary`` = the node that accepted the
  write, as reported by the server itself, ``timeline``, ``sysid``, ``lease_epoch``, ``key``, ``error``...)
  are kept in ``Op.extra``.
- Outcome contract (FAULTS.md §5.2): ``ok`` = took effect; ``fail`` = *definitely* did not take effect
  (for a ``cas``: the compare definitely failed); ``info`` = unknown, may or may not have taken effect.
  A harness that is not sure must record ``info``; checkers treat ``info`` as "maybe", never as failed.
- Nemesis events have ``"process": "nemesis"``, ``"type": "info"``, ``f`` = fault name and ``value`` either
  ``"start"`` / ``"stop"`` or an object ``{"phase": "start"|"stop", "id": ..., ...}``; ``id`` (optional)
  tells overlapping faults of the same name apart. Other phases (``started``, ``verify``) carry details and
  do not open or close a window.

Pairing: a client process has at most one outstanding operation; each invoke is matched with the next
completion of the same process. An invoke still open at the end of the history counts as ``info``.
Malformed input raises ``HistoryError`` naming the line or op index: parsing lives at this edge.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
OP_TYPES = frozenset({"invoke", "ok", "fail", "info"})
NEMESIS = "nemesis"
_CORE_FIELDS = ("index", "process", "type", "f", "value", "time", "node")


class HistoryError(ValueError):
    """The history breaks the format or the pairing rules (a harness bug, not a system bug)."""


@dataclass(frozen=True)
class Op:
    """One history entry. ``extra`` holds the op-specific fields (primary, timeline, key, ...)."""

    index: int
    process: int | str
    type: OpType
    f: str
    value: Any = None
    time: float = 0.0
    node: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_nemesis(self) -> bool:
        return self.process == NEMESIS

    def get(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "process": self.process, "type": self.type,
                               "f": self.f, "value": self.value, "time": self.time}
        if self.node is not None:
            out["node"] = self.node
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "") -> Op:
        """Validate one decoded line; ``where`` prefixes error messages (e.g. ``"line 3: "``)."""
        if not isinstance(raw, Mapping):
            raise HistoryError(f"{where}expected a JSON object, got {type(raw).__name__}")
        for name in ("index", "process", "type", "f", "time"):
            if name not in raw:
                raise HistoryError(f"{where}missing field {name!r}")
        index, process, op_type, f, t = (raw[k] for k in ("index", "process", "type", "f", "time"))
        if not isinstance(index, int) or isinstance(index, bool):
            raise HistoryError(f"{where}index must be an integer, got {index!r}")
        if not isinstance(process, int | str) or isinstance(process, bool):
            raise HistoryError(f"{where}process must be an integer or a string, got {process!r}")
        if op_type not in OP_TYPES:
            raise HistoryError(f"{where}type must be one of {sorted(OP_TYPES)}, got {op_type!r}")
        if not isinstance(f, str) or not f:
            raise HistoryError(f"{where}f must be a non-empty string, got {f!r}")
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
            raise HistoryError(f"{where}time must be a finite number, got {t!r}")
        node = raw.get("node")
        if node is not None and not isinstance(node, str):
            raise HistoryError(f"{where}node must be a string, got {node!r}")
        if process == NEMESIS and op_type != "info":
            raise HistoryError(f"{where}nemesis entries must have type 'info', got {op_type!r}")
        extra = {k: v for k, v in raw.items() if k not in _CORE_FIELDS}
        return cls(index, process, op_type, f, raw.get("value"), float(t), node, extra)


@dataclass(frozen=True)
class Pair:
    """An invoke and its completion (None: the history ended first, which counts as ``info``)."""

    invoke: Op
    completion: Op | None

    @property
    def type(self) -> OpType:
        return self.completion.type if self.completion is not None else "info"

    @property
    def process(self) -> int | str:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def node(self) -> str | None:
        if self.completion is not None and self.completion.node is not None:
            return self.completion.node
        return self.invoke.node

    @property
    def start(self) -> float:
        return self.invoke.time

    @property
    def end(self) -> float | None:
        """Completion time as recorded; None when there was no completion at all."""
        return self.completion.time if self.completion is not None else None

    @property
    def value(self) -> Any:
        """The completion's value when it carries one (reads), else the invoke's (writes)."""
        if self.completion is not None and self.completion.value is not None:
            return self.completion.value
        return self.invoke.value

    def get(self, name: str, default: Any = None) -> Any:
        """An op-specific field, from the completion first (server-reported), then the invoke."""
        if self.completion is not None and name in self.completion.extra:
            return self.completion.extra[name]
        return self.invoke.extra.get(name, default)

    def describe(self) -> str:
        end = f"{self.end:.3f}" if self.end is not None else "?"
        return (f"{self.f} {self.value!r} by process {self.process} on {self.node or '?'} "
                f"[{self.type}, t={self.start:.3f}..{end}, index {self.invoke.index}]")


@dataclass(frozen=True)
class FaultWindow:
    """A nemesis fault from its start event to its stop event (``stop`` None: never stopped)."""

    f: str
    start: float
    stop: float | None
    detail: Any = None

    def overlaps(self, start: float, end: float) -> bool:
        return start <= (self.stop if self.stop is not None else math.inf) and end >= self.start


def pair_ops(ops: Iterable[Op]) -> tuple[Pair, ...]:
    """Match each client invoke with the next completion of its process (nemesis entries skipped)."""
    outstanding: dict[int | str, Op] = {}
    pairs: list[Pair] = []
    for op in ops:
        if op.is_nemesis:
            continue
        if op.type == "invoke":
            if op.process in outstanding:
                raise HistoryError(f"op {op.index}: process {op.process!r} invoked while op "
                                   f"{outstanding[op.process].index} is still outstanding")
            outstanding[op.process] = op
            continue
        invoke = outstanding.pop(op.process, None)
        if invoke is None:
            raise HistoryError(f"op {op.index}: {op.type} completion without an invoke "
                               f"for process {op.process!r}")
        if invoke.f != op.f:
            raise HistoryError(f"op {op.index}: completion f={op.f!r} does not match invoke "
                               f"{invoke.index} f={invoke.f!r}")
        if op.time < invoke.time:
            raise HistoryError(f"op {op.index}: completes at {op.time} before its invoke at {invoke.time}")
        pairs.append(Pair(invoke, op))
    pairs.extend(Pair(invoke, None) for invoke in outstanding.values())
    pairs.sort(key=lambda p: p.invoke.index)
    return tuple(pairs)


def nemesis_phase(op: Op) -> tuple[str | None, Any]:
    """(``"start"``/``"stop"``/None, fault id) of a nemesis entry."""
    if isinstance(op.value, str):
        return (op.value if op.value in ("start", "stop") else None), None
    if isinstance(op.value, Mapping):
        phase = op.value.get("phase")
        return (phase if phase in ("start", "stop") else None), op.value.get("id")
    return None, None


def fault_windows(ops: Iterable[Op]) -> tuple[FaultWindow, ...]:
    """Pair nemesis start/stop events per (fault name, id), first in first out."""
    open_starts: dict[tuple[str, Any], list[Op]] = {}
    windows: list[FaultWindow] = []
    for op in ops:
        if not op.is_nemesis:
            continue
        phase, fault_id = nemesis_phase(op)
        key = (op.f, json.dumps(fault_id, sort_keys=True))
        if phase == "start":
            open_starts.setdefault(key, []).append(op)
        elif phase == "stop" and open_starts.get(key):
            started = open_starts[key].pop(0)
            windows.append(FaultWindow(op.f, started.time, op.time, started.value))
    for started_ops in open_starts.values():
        windows.extend(FaultWindow(s.f, s.time, None, s.value) for s in started_ops)
    windows.sort(key=lambda w: w.start)
    return tuple(windows)


@dataclass(frozen=True)
class History:
    """An immutable, index-ordered sequence of ``Op`` with derived views (pairs, fault windows)."""

    ops: tuple[Op, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.ops, key=lambda o: o.index))
        for prev, op in zip(ordered, ordered[1:], strict=False):
            if prev.index == op.index:
                raise HistoryError(f"duplicate index {op.index}")
        object.__setattr__(self, "ops", ordered)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @classmethod
    def from_dicts(cls, rows: Iterable[Mapping[str, Any]]) -> History:
        return cls(tuple(Op.from_dict(row, f"entry {n}: ") for n, row in enumerate(rows)))

    @classmethod
    def loads(cls, text: str) -> History:
        ops = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise HistoryError(f"line {lineno}: invalid JSON: {e.msg}") from None
            ops.append(Op.from_dict(raw, f"line {lineno}: "))
        return cls(tuple(ops))

    @classmethod
    def read(cls, path: str | Path) -> History:
        return cls.loads(Path(path).read_text(encoding="utf-8"))

    def dumps(self) -> str:
        return "".join(json.dumps(op.to_dict()) + "\n" for op in self.ops)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @cached_property
    def pairs(self) -> tuple[Pair, ...]:
        return pair_ops(self.ops)

    @cached_property
    def fault_windows(self) -> tuple[FaultWindow, ...]:
        return fault_windows(self.ops)

    def nemesis_ops(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.is_nemesis)


class HistoryWriter:
    """Thread-safe JSONL appender for the harness: assigns indexes, stamps ``now()``, flushes each line.

    It also enforces the one-outstanding-op-per-process rule at the source, so a client bug fails fast
    instead of producing a history the checkers would reject later.
    """

    def __init__(self, stream: IO[str], now: Callable[[], float]) -> None:
        self._stream = stream
        self._now = now
        self._lock = threading.Lock()
        self._next_index = 0
        self._outstanding: dict[int | str, str] = {}

    def append(self, process: int | str, op_type: OpType, f: str, value: Any = None,
               node: str | None = None, **extra: Any) -> Op:
        with self._lock:
            self._check_pairing(process, op_type, f)
            op = Op(self._next_index, process, op_type, f, value, self._now(), node, extra)
            self._stream.write(json.dumps(op.to_dict()) + "\n")
            self._stream.flush()
            self._next_index += 1
            return op

    def _check_pairing(self, process: int | str, op_type: OpType, f: str) -> None:
        if process == NEMESIS:
            if op_type != "info":
                raise HistoryError("nemesis entries must have type 'info'")
            return
        if op_type == "invoke":
            if process in self._outstanding:
                raise HistoryError(f"process {process!r} already has an outstanding op")
            self._outstanding[process] = f
        elif self._outstanding.get(process) != f:
            raise HistoryError(f"process {process!r}: {op_type} {f!r} does not complete an outstanding op")
        else:
            del self._outstanding[process]
