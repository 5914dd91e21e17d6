"""Bootstrap checker: every bootstrap round (``--workload bootstrap``) ends in one cluster.

Input: ``bootstrap`` ops (process ``"bootstrap"``), whose ``ok`` value records the round's outcome:
``converged`` (one primary and every replica streaming within the settle time after the heal),
``sysids`` (node -> system identifier, None if unreadable) and ``primary``.

Invalid: a round that did not converge (a node partitioned during the bootstrap stays out, crash-loops,
or nobody becomes primary), or data nodes with different system identifiers (one kept a cluster of its
own). Unknown with fewer than ``min_rounds`` rounds, or when a round's outcome was not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping

from jepsen_lite.checkers.result import CheckResult, verdict
from jepsen_lite.history import History

NAME = "bootstrap"


def check(history: History, *, min_rounds: int = 3) -> CheckResult:
    rounds = [p for p in history.pairs if p.f == "bootstrap"]
    violations: list[str] = []
    converged_s: list[float] = []
    unrecorded = 0
    for p in rounds:
        outcome = p.completion.value if p.type == "ok" and p.completion is not None else None
        if not isinstance(outcome, Mapping):
            unrecorded += 1
            continue
        label = f"round {outcome.get('round')} ({outcome.get('shape')}, cut at {outcome.get('delay_s')} s)"
        sysids = outcome.get("sysids") or {}
        distinct = {s for s in sysids.values() if s is not None}
        if not outcome.get("converged"):
            violations.append(f"VIOLATION {label}: no healthy cluster after the heal: primary "
                              f"{outcome.get('primary')}, system identifiers {sysids}")
        if len(distinct) > 1:
            violations.append(f"VIOLATION {label}: several system identifiers {sysids}")
        if outcome.get("converged_after_heal_s") is not None:
            converged_s.append(float(outcome["converged_after_heal_s"]))
    counts: dict[str, int | float] = {"rounds": len(rounds), "unrecorded": unrecorded,
                                      "violations": len(violations)}
    if converged_s:
        counts["worst_converged_after_heal_s"] = round(max(converged_s), 2)
    details = list(violations)
    enough = len(rounds) - unrecorded >= min_rounds and not unrecorded
    if not enough:
        details.append(f"inconclusive: {len(rounds) - unrecorded} recorded rounds < minimum {min_rounds}"
                       + (f" ({unrecorded} unrecorded)" if unrecorded else ""))
    return CheckResult(NAME, verdict(bool(violations), enough), counts, tuple(details))
