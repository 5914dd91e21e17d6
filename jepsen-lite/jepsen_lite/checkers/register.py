"""C3 linearizable register (W4 raft KV), checked per key (P-compositionality) with the WGL search.

Ops on a key (field ``key``; absent = one unnamed register):

=========  ========================  ============================================================
f          value                     meaning by outcome
=========  ========================  ============================================================
read       (ok: the value read)      ok: observed the register at some instant of its interval;
                                     fail / info: ignored (a read has no effect)
write      v                         ok: set to v; fail: dropped (no effect); info: may set v at
                                     any instant after its invoke, or never
delete     —                         a write of ``None`` (the absent key)
cas        [expected, new]           ok: register == expected, set to new; fail with an error
                                     "compare failed ...": register != expected at that instant;
                                     any other fail (not sent, a definite refusal): dropped (no
                                     effect, no observation); info: may swap at any instant after
                                     invoke, or never
=========  ========================  ============================================================

The register starts as ``initial`` (default ``None`` = absent key). Values are compared after JSON lists
became tuples. Each key is valid if some total order of its ops respects real time (an op that completed
before another was invoked comes first) and the register semantics. Result: invalid if any key is not
linearizable (with the longest linearizable prefix and the op that could not be placed), ``"unknown"`` if
the search budget ran out for some key, or there were fewer than ``min_ops`` ops with a definite outcome
(``ok``, or a ``cas`` whose compare failed) in all; ops with another ``f`` are counted as ``ignored``.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_lite.checkers.result import CheckResult, verdict
from jepsen_lite.checkers.wgl import Outcome, SearchOp, search
from jepsen_lite.history import History, HistoryError, Pair

NAME = "linearizable-register"
REGISTER_FS = frozenset({"read", "write", "delete", "cas"})
PREFIX_SHOWN = 8


@dataclass(frozen=True)
class RegisterOp:
    kind: str  # "read", "write", "cas"
    outcome: str  # "ok", "fail", "info"
    arg: Hashable  # read: observed value; write: new value; cas: (expected, new)
    pair: Pair

    def describe(self) -> str:
        p = self.pair
        end = "never/unknown" if self.outcome == "info" else f"{p.end:.3f}"
        what = {"read": f"read -> {self.arg!r}", "write": f"write {self.arg!r}"}.get(
            self.kind, f"cas {self.arg!r}")
        return (f"{what} [{self.outcome}] by process {p.process} on {p.node or '?'} "
                f"(t={p.start:.3f}..{end}, index {p.invoke.index})")


def freeze(value: Any) -> Hashable:
    """JSON value -> hashable, equal values staying equal (lists -> tuples, objects -> sorted items)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


def step(state: Hashable, op: RegisterOp) -> tuple[bool, Hashable]:
    """The register model: (is op allowed in ``state``, state after it)."""
    if op.kind == "read":
        return state == op.arg, state
    if op.kind == "write":
        return True, op.arg
    expected, new = op.arg  # type: ignore[misc]
    if op.outcome == "fail":
        return state != expected, state
    return state == expected, new


def to_register_op(p: Pair) -> RegisterOp | None:
    """None for ops that constrain nothing: failed/unknown reads, definitely failed writes."""
    outcome = p.type
    if p.f == "read":
        if outcome != "ok" or p.completion is None:
            return None
        return RegisterOp("read", outcome, freeze(p.completion.value), p)
    if p.f in ("write", "delete"):
        if outcome == "fail":
            return None
        return RegisterOp("write", outcome, None if p.f == "delete" else freeze(p.invoke.value), p)
    arg = freeze(p.invoke.value)
    if not (isinstance(arg, tuple) and len(arg) == 2):
        raise HistoryError(f"op {p.invoke.index}: cas value must be [expected, new], got {p.invoke.value!r}")
    if outcome == "fail" and not compare_failed(p):
        return None  # never reached the store (e.g. connection refused): it observed nothing
    return RegisterOp("cas", outcome, arg, p)


def compare_failed(p: Pair) -> bool:
    """A failed cas observed the register only if the store answered that the compare failed. Taking a
    cas that was never sent for one made a run on a killed node's refused connections non-linearizable
    (campaign cell register-s2: two keys, both at refused connections of the killed n2)."""
    error = p.completion.extra.get("error") if p.completion is not None else None
    return isinstance(error, str) and error.startswith("compare failed")


def check(history: History, *, initial: Any = None, min_ops: int = 50, max_steps: int = 2_000_000,
          max_seconds: float | None = 60.0) -> CheckResult:
    by_key, ignored = partition(history)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    counts: dict[str, int | float] = {"keys": len(by_key), "ignored": ignored, "info_pruned": 0, "steps": 0,
                                      "linearizable_keys": 0, "nonlinearizable_keys": 0, "unknown_keys": 0}
    for outcome in ("ok", "fail", "info"):
        counts[f"{outcome}_ops"] = sum(op.outcome == outcome for ops in by_key.values() for op in ops)
    definite = counts["ok_ops"] + counts["fail_ops"]
    details: list[str] = []
    for key in sorted(by_key, key=repr):
        ops = prune_unobserved_info(by_key[key])
        counts["info_pruned"] += len(by_key[key]) - len(ops)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        outcome = _check_key(ops, freeze(initial), max_steps, remaining)
        counts["steps"] += outcome.steps
        label = {True: "linearizable_keys", False: "nonlinearizable_keys"}.get(outcome.result, "unknown_keys")
        counts[label] += 1
        if outcome.result is not True:
            details.extend(_explain(key, ops, outcome))
    enough = bool(by_key) and definite >= min_ops and counts["unknown_keys"] == 0
    if definite < min_ops or not by_key:
        details.append(f"inconclusive: {definite} register ops with a definite outcome "
                       f"< minimum {max(1, min_ops)}")
    return CheckResult(NAME, verdict(counts["nonlinearizable_keys"] > 0, enough), counts, tuple(details))


def partition(history: History) -> tuple[dict[Hashable, list[RegisterOp]], int]:
    """Register ops per key (P-compositionality), and how many client ops were not register ops."""
    by_key: dict[Hashable, list[RegisterOp]] = {}
    ignored = 0
    for p in history.pairs:
        if p.f not in REGISTER_FS:
            ignored += 1
            continue
        op = to_register_op(p)
        if op is not None:
            by_key.setdefault(freeze(p.get("key")), []).append(op)
    return by_key, ignored


def prune_unobserved_info(ops: Sequence[RegisterOp]) -> list[RegisterOp]:
    """Drop ``info`` writes/cas whose new value nothing could depend on.

    An unknown-outcome op may never have happened, so removing it can only make a linearizable history
    stay linearizable; it is also *safe* when its new value v is never positively observed (no ok read of v,
    no cas of any outcome expecting v) and the key has no failed cas: then, in any linearization that
    applies it, no op placed while the register holds v depends on that value (reads and cas would observe
    v; only writes can follow), so the same order without it is still legal. Each pending info op doubles
    the WGL search space, and Jepsen-style histories (unique values) rarely read a crashed write.
    """
    if any(op.kind == "cas" and op.outcome == "fail" for op in ops):
        return list(ops)
    observed = {op.arg for op in ops if op.kind == "read"}
    observed |= {op.arg[0] for op in ops if op.kind == "cas"}  # type: ignore[index]
    return [op for op in ops if op.outcome != "info" or _new_value(op) in observed]


def _new_value(op: RegisterOp) -> Hashable:
    return op.arg[1] if op.kind == "cas" else op.arg  # type: ignore[index]


def _check_key(ops: Sequence[RegisterOp], initial: Hashable, max_steps: int,
               max_seconds: float | None) -> Outcome:
    search_ops = [SearchOp(op.pair.start, None if op.outcome == "info" else op.pair.end, op) for op in ops]
    return search(search_ops, step, initial, max_steps=max_steps, max_seconds=max_seconds)


def _explain(key: Hashable, ops: Sequence[RegisterOp], outcome: Outcome) -> list[str]:
    if outcome.result is None:
        return [f"key {key!r}: search budget exhausted after {outcome.steps} steps ({len(ops)} ops): "
                f"inconclusive, not a pass"]
    prefix = [ops[i] for i in outcome.linearization]
    lines = [f"key {key!r}: NOT linearizable ({len(ops)} ops). Longest linearizable prefix: "
             f"{len(prefix)} ops, register = {outcome.state!r} after it"]
    if len(prefix) > PREFIX_SHOWN:
        lines.append(f"  ... {len(prefix) - PREFIX_SHOWN} earlier ops")
    lines.extend(f"  {n}. {op.describe()}" for n, op in
                 enumerate(prefix[-PREFIX_SHOWN:], start=max(1, len(prefix) - PREFIX_SHOWN + 1)))
    if outcome.blocked is not None:
        lines.append(f"  could not be linearized: {ops[outcome.blocked].describe()}")
    return lines
