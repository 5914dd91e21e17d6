"""Wing–Gong linearizability search with Lowe's memoisation (the algorithm of porcupine and Knossos' wgl).

Generic over the model: callers give operations with a real-time interval and a ``step(state, op) ->
(allowed, new_state)`` function. States must be hashable.

The search: call and return events of all operations, sorted by time (a call before a return at the same
instant, so touching intervals count as concurrent — the permissive choice, never a false alarm), form a
doubly linked list. Walking from the head, a call whose operation the model allows is *lifted* (its call
and return removed from the list), pushed on an undo stack, and the walk restarts from the head; reaching
a return means that operation could not be placed before it returned, so the last lifted operation is
unlifted and the walk continues after it. ``(linearized set as a bitset, state)`` pairs already explored
are cached, which prunes the exponential search to what porcupine achieves in practice.

Operations with ``end = None`` (unknown outcome, ``info``) have no return event: they may be linearized at
any point after their call, or never — the search succeeds once every *other* operation is linearized.

Budget: ``max_steps`` loop iterations and ``max_seconds`` of wall time; exceeding either gives
``Outcome(result=None)`` (unknown), never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

Step = Callable[[Hashable, Any], tuple[bool, Hashable]]


@dataclass(frozen=True)
class SearchOp:
    """``start``/``end`` are the real-time interval; ``end`` None = unknown outcome (may never happen)."""

    start: float
    end: float | None
    op: Any


@dataclass(frozen=True)
class Outcome:
    result: bool | None  # None: budget exhausted
    steps: int
    linearization: tuple[int, ...] = ()  # op ids in order (the full one, or the longest partial one)
    state: Hashable = None  # model state after ``linearization``
    blocked: int | None = None  # op whose return could not be passed after the longest partial one


class _Node:
    __slots__ = ("op_id", "is_call", "match", "prev", "next")

    def __init__(self, op_id: int, is_call: bool) -> None:
        self.op_id = op_id
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _build_list(ops: Sequence[SearchOp]) -> _Node:
    """Doubly linked event list behind a sentinel head; each call node points at its return node."""
    events: list[tuple[float, int, int, _Node]] = []
    for op_id, op in enumerate(ops):
        call = _Node(op_id, True)
        events.append((op.start, 0, op_id, call))
        if op.end is not None:
            ret = _Node(op_id, False)
            call.match = ret
            events.append((op.end, 1, op_id, ret))
    events.sort(key=lambda e: e[:3])
    head = _Node(-1, False)
    prev = head
    for *_, node in events:
        prev.next, node.prev = node, prev
        prev = node
    return head


def _lift(call: _Node) -> None:
    call.prev.next = call.next  # type: ignore[union-attr]
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    if ret is not None:
        ret.prev.next = ret.next  # type: ignore[union-attr]
        if ret.next is not None:
            ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    if ret is not None:
        ret.prev.next = ret  # type: ignore[union-attr]
        if ret.next is not None:
            ret.next.prev = ret
    call.prev.next = call  # type: ignore[union-attr]
    if call.next is not None:
        call.next.prev = call


class _Budget:
    def __init__(self, max_steps: int, max_seconds: float | None) -> None:
        self.steps = 0
        self.max_steps = max_steps
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def spent(self) -> bool:
        self.steps += 1
        if self.steps > self.max_steps:
            return True
        return self.deadline is not None and self.steps % 1024 == 0 and time.monotonic() > self.deadline


def search(ops: Sequence[SearchOp], step: Step, initial: Hashable, *,
           max_steps: int = 1_000_000, max_seconds: float | None = None) -> Outcome:
    head = _build_list(ops)
    required = sum(1 for op in ops if op.end is not None)
    budget = _Budget(max_steps, max_seconds)
    state, linearized, done = initial, 0, 0
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Node, Hashable]] = []
    best: tuple[tuple[int, ...], Hashable, int | None] = ((), initial, None)
    entry = head.next
    while done < required:
        if budget.spent():
            return Outcome(None, budget.steps, *best)
        assert entry is not None, "a required op's return is always ahead of the walk"
        if entry.is_call:
            allowed, new_state = step(state, ops[entry.op_id].op)
            key = (linearized | (1 << entry.op_id), new_state)
            if allowed and key not in seen:
                seen.add(key)
                stack.append((entry, state))
                state, linearized = new_state, key[0]
                done += entry.match is not None
                _lift(entry)
                entry = head.next
                continue
            entry = entry.next
            continue
        if len(stack) >= len(best[0]):
            best = (tuple(node.op_id for node, _ in stack), state, entry.op_id)
        if not stack:
            return Outcome(False, budget.steps, *best)
        entry, state = stack.pop()
        linearized &= ~(1 << entry.op_id)
        done -= entry.match is not None
        _unlift(entry)
        entry = entry.next
    return Outcome(True, budget.steps, tuple(node.op_id for node, _ in stack), state)
