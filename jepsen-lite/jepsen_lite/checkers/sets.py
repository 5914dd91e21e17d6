"""C1 set checker (Jepsen ``set`` / ``patroni-set``): no acknowledged insert may be lost.

Input: ``insert`` ops with unique values, and the final ``read-all`` ops (``ok``, value = list of every
value the node holds, ``node`` = where it was read), one per node after heal + settle. When a node was
read more than once, its last ok read is its final state.

Every attempted value is classified against the final reads:

==================== ============================================ =====================================
class                meaning                                      verdict
==================== ============================================ =====================================
ok                   acked ``ok`` and present in every final read fine
lost                 acked ``ok`` but absent from some final read invalid; with ``lost_allowed`` (async
                                                                  replication) valid plus a WARNING
recovered            ``info`` (unknown outcome) and present       fine: "maybe" ops may take effect
maybe                ``info`` and absent                          fine: "maybe" ops may not take effect
failed               ``fail`` and absent                          fine
failed-but-present   ``fail`` (definitely not committed) present  invalid: a failed op took effect
unexpected           present, never attempted                     invalid, always
duplicated           listed twice in one final read               invalid: applied twice
divergent            present in some final reads, not in others   invalid: nodes disagree after settle
==================== ============================================ =====================================

``fail`` is trusted to be definite (the error came before COMMIT reached the server); the harness must
record ``info`` whenever it is unsure (FAULTS.md §5.2). Duplicate insert values make the check ambiguous
(a harness bug) and give ``"unknown"``. No final read, or fewer acked inserts than ``min_acked`` (during
faults when the history has faults), gives ``"unknown"`` unless a violation was already proven.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from jepsen_lite.checkers.result import (
    UNKNOWN,
    CheckResult,
    acked_evidence,
    evidence_detail,
    listed,
    verdict,
)
from jepsen_lite.history import History, HistoryError, Pair

NAME = "set"
CATEGORIES = ("ok", "lost", "recovered", "maybe", "failed", "failed_but_present", "unexpected",
              "duplicated", "divergent")


def check(history: History, *, lost_allowed: bool = False, min_acked: int = 200,
          insert_f: str = "insert", read_f: str = "read-all") -> CheckResult:
    inserts = [p for p in history.pairs if p.f == insert_f]
    attempts, repeated = _attempts(inserts)
    finals = _final_reads([p for p in history.pairs if p.f == read_f and p.type == "ok"])
    if repeated:
        return CheckResult(NAME, UNKNOWN, {"attempted": len(inserts)},
                           (f"ambiguous: insert values attempted more than once {listed(repeated)}",))
    if not finals:
        return CheckResult(NAME, UNKNOWN, {"attempted": len(inserts)},
                           (f"inconclusive: no ok {read_f!r} final read in the history",))
    classes = _classify(attempts, finals)
    counts: dict[str, int | float] = {"attempted": len(attempts), "final_reads": len(finals)}
    counts.update({name: len(values) for name, values in classes.items()})
    acked = [p for p in attempts.values() if p.type == "ok"]
    counts["acknowledged"] = len(acked)
    have, what = acked_evidence(acked, history.fault_windows)
    counts["evidence"] = have

    details = _details(classes, finals, lost_allowed)
    violated = any(classes[c] for c in ("unexpected", "failed_but_present", "duplicated", "divergent"))
    violated = violated or (bool(classes["lost"]) and not lost_allowed)
    enough = have >= min_acked
    if not enough:
        details.append(evidence_detail(have, what, min_acked))
    return CheckResult(NAME, verdict(violated, enough), counts, tuple(details))


def _attempts(inserts: Sequence[Pair]) -> tuple[dict[Hashable, Pair], set[Hashable]]:
    attempts: dict[Hashable, Pair] = {}
    repeated: set[Hashable] = set()
    for p in inserts:
        value = p.invoke.value
        if not isinstance(value, Hashable) or isinstance(value, bool):
            raise HistoryError(f"op {p.invoke.index}: insert value must be a scalar, got {value!r}")
        if value in attempts:
            repeated.add(value)
        attempts[value] = p
    return attempts, repeated


def _final_reads(reads: Sequence[Pair]) -> dict[str, Counter]:
    """node label -> multiset of values, from each node's last ok read."""
    finals: dict[str, Counter] = {}
    for p in reads:
        if not isinstance(p.value, list):
            raise HistoryError(f"op {p.invoke.index}: read-all value must be a list, got {p.value!r}")
        finals[p.node or f"read@{p.invoke.index}"] = Counter(p.value)
    return finals


def _classify(attempts: dict[Hashable, Pair], finals: dict[str, Counter]) -> dict[str, set]:
    classes: dict[str, set] = {name: set() for name in CATEGORIES}
    everywhere = set.intersection(*(set(c) for c in finals.values()))
    anywhere = set().union(*(set(c) for c in finals.values()))
    for counter in finals.values():
        classes["duplicated"].update(v for v, n in counter.items() if n > 1)
    classes["divergent"] = anywhere - everywhere
    classes["unexpected"] = anywhere - set(attempts)
    for value, p in attempts.items():
        present = value in anywhere
        if p.type == "ok":
            classes["ok" if value in everywhere else "lost"].add(value)
        elif p.type == "fail":
            classes["failed_but_present" if present else "failed"].add(value)
        else:
            classes["recovered" if present else "maybe"].add(value)
    return classes


def _details(classes: dict[str, set], finals: dict[str, Counter], lost_allowed: bool) -> list[str]:
    details: list[str] = []
    if classes["lost"]:
        prefix = "WARNING (allowed: async replication): " if lost_allowed else ""
        details.append(f"{prefix}lost: acknowledged inserts absent from a final read "
                       f"{listed(classes['lost'])}")
        for node, counter in sorted(finals.items()):
            missing = {v for v in classes["lost"] if v not in counter}
            if missing:
                details.append(f"  absent on {node}: {listed(missing)}")
    messages = {
        "unexpected": "unexpected: present but never attempted",
        "failed_but_present": "failed-but-present: definitely failed inserts that took effect",
        "duplicated": "duplicated: values listed twice in one final read",
        "divergent": "divergent: final reads disagree on",
    }
    for name, message in messages.items():
        if classes[name]:
            details.append(f"{message} {listed(classes[name])}")
    if classes["recovered"]:
        details.append(f"recovered: info (unknown outcome) inserts present {listed(classes['recovered'])}")
    return details


# shared with the bank checker, which classifies transfer ids against the final transfer logs the same way
classify = _classify
describe = _details
VIOLATING = ("unexpected", "failed_but_present", "duplicated", "divergent")
