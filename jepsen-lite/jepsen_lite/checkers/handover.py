"""Clean-stop handover (DESIGN.md rule 11): when the primary's agent is stopped cleanly (SIGTERM / SIGINT to
its whole process group, the ``stop-group`` fault), it hands the leader key over at once, so another node is
primary long before the lease could have expired.

Input: the ``verify`` entries of ``stop-group`` faults (``handover_s``: from the signal until another node
answered ``GET /primary`` 200, None if none did; ``ttl_s``; ``victim_was_primary``;
``replicas_streaming_before``). Only stops of a primary with at least one streaming replica count (with
none, nobody is eligible and no handover is expected). Invalid when such a handover took longer than
``max_fraction`` x TTL (a failover by lease expiry takes at least the TTL) or never came.
"""

from __future__ import annotations

from collections.abc import Mapping

from jepsen_lite.checkers.result import CheckResult
from jepsen_lite.history import History

NAME = "handover"


def check(history: History, *, max_fraction: float = 0.5) -> CheckResult:
    stops = [op for op in history.nemesis_ops()
             if op.f == "stop-group" and isinstance(op.value, Mapping) and op.value.get("phase") == "verify"]
    relevant = [op for op in stops if op.value.get("victim_was_primary")
                and (op.value.get("replicas_streaming_before") or 0) >= 1]
    slow, times = [], []
    for op in relevant:
        handover, ttl = op.value.get("handover_s"), float(op.value.get("ttl_s") or 0)
        if handover is None or handover > max_fraction * ttl:
            slow.append(f"VIOLATION slow handover: clean stop of primary (step {op.value.get('id')}, "
                        f"t={op.time:.3f}): new primary after {handover} s, TTL {ttl:g} s")
        if handover is not None:
            times.append(handover)
    counts: dict[str, int | float] = {"clean_stops": len(stops), "of_primary": len(relevant), "slow": len(slow)}
    if times:
        counts["worst_handover_s"] = round(max(times), 3)
    details = slow or [f"{len(relevant)} clean stops of a primary handed over within {max_fraction:g} x TTL"]
    return CheckResult(NAME, not slow, counts, tuple(details))
