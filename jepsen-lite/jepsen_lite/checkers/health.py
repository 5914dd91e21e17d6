"""W6 health oracle (FAULTS.md): what ``GET /primary`` told a load balancer, against the writes.

Input: ``health`` ops (one poller per data node asks ``GET /primary`` every ~100 ms; the ok completion has
``status`` and, from the body, ``role`` and ``timeline``) and the acknowledged writes (``primary``,
``timeline``, as the workloads record them).

Violation (provable in real time, no tolerance): a node answered 200 claiming timeline t, for a request
*sent after* another node had acknowledged a write on a newer timeline. A load balancer following that
answer sends clients to a primary that a newer one has replaced (the lag of a health check behind
PostgreSQL that outside checks found once). Informational: 200 answers from two nodes whose requests
overlapped in time (not provable: each may have been true at its own instant), and 200s without a timeline.
Too few 200 answers (no primary ever reported) makes the result inconclusive.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from jepsen_lite.checkers.primaries import WRITE_FS
from jepsen_lite.checkers.result import CheckResult, verdict
from jepsen_lite.history import History, Pair

NAME = "health"
F = "health"


def check(history: History, *, min_answers: int = 20) -> CheckResult:
    answers = [p for p in history.pairs if p.f == F and p.type == "ok" and p.end is not None]
    yes = sorted((p for p in answers if p.get("status") == 200), key=lambda p: p.start)
    acks: dict[str, list[tuple[float, int]]] = defaultdict(list)  # node -> (completed, timeline), by time
    for p in history.pairs:
        if p.f in WRITE_FS and p.type == "ok" and p.end is not None and isinstance(p.get("timeline"), int) \
                and p.get("primary"):
            acks[str(p.get("primary"))].append((p.end, int(p.get("timeline"))))
    newest: dict[str, tuple[list[float], list[int]]] = {}  # node -> completion times, running max timeline
    for node, rows in acks.items():
        rows.sort()
        times, best, top = [], [], 0
        for end, timeline in rows:
            top = max(top, timeline)
            times.append(end)
            best.append(top)
        newest[node] = (times, best)

    stale: list[str] = []
    untimed = 0
    for p in yes:
        claimed = p.get("timeline")
        if not isinstance(claimed, int):
            untimed += 1
            continue
        for node, (times, best) in newest.items():
            if node == p.node:
                continue
            seen = bisect.bisect_left(times, p.start)  # acks completed before the request was sent
            if seen and best[seen - 1] > claimed:
                stale.append(f"VIOLATION stale 200: {p.node} answered GET /primary 200 on timeline {claimed} "
                             f"(t={p.start:.3f}..{p.end:.3f}) after {node} acknowledged a write on timeline "
                             f"{best[seen - 1]}")
                break
    counts: dict[str, int | float] = {"answers": len(answers), "answers_200": len(yes), "stale_200": len(stale),
                                      "without_timeline": untimed, "overlapping_200s": _overlapping(yes)}
    details = stale[:20] or [f"{len(yes)} answers 200, none after a newer timeline's acknowledged write"]
    return CheckResult(NAME, verdict(bool(stale), len(yes) >= min_answers), counts, tuple(details))


def _overlapping(yes: list[Pair]) -> int:
    """200 answers whose request overlapped a 200 answer from another node (sorted by start)."""
    count = 0
    open_: list[Pair] = []
    for p in yes:
        open_ = [q for q in open_ if q.end is not None and q.end >= p.start]
        if any(q.node != p.node for q in open_):
            count += 1
        open_.append(p)
    return count
