"""C6 availability: informational figures, always ``valid=True`` (correctness is the other checkers' job).

- ``ok_fraction``: ok client ops / all client ops (ops still open at the end count as not ok).
- Per nemesis fault start: ``recovery`` = time from the fault's start to the completion of the first ok
  write *invoked* at or after it (a write already in flight proves nothing about the faulted cluster).
  When ok writes carry ``primary``, the fault caused a *failover* when a write acknowledged by a new epoch
  (another primary, timeline or lease epoch than the last ok write completed before the fault) was invoked
  after the fault started and before the next fault started; the failover time is from the fault's start
  to that write's completion. (An isolated primary may go on acknowledging writes for a while, so the first
  ok write after a fault is not the failover.)
- Unavailability windows: gaps longer than ``gap_threshold_s`` between consecutive ok write completions,
  bounded by the first and last write invoke (a cluster that never recovers shows a window to the end).

Figures (seconds): median/worst recovery over all faults, median/worst failover over failovers, number of
faults after which no ok write was seen, number/worst/total of unavailability windows.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from jepsen_lite.checkers.primaries import WRITE_FS
from jepsen_lite.checkers.result import CheckResult
from jepsen_lite.history import FaultWindow, History, Pair

NAME = "availability"
MAX_DETAILS = 30


@dataclass(frozen=True)
class Recovery:
    fault: FaultWindow
    recovery_s: float | None  # None: no ok write invoked after the fault started
    primary_before: str | None
    primary_after: str | None
    failover_s: float | None = None  # to the first ok write of a new epoch; None: no new epoch

    @property
    def failover(self) -> bool:
        return self.failover_s is not None


def check(history: History, *, write_fs: frozenset[str] = WRITE_FS,
          gap_threshold_s: float = 1.0) -> CheckResult:
    client = [p for p in history.pairs if p.f != "health"]  # the health oracle's polls are not client ops
    writes = [p for p in client if p.f in write_fs]
    ok_writes = sorted((p for p in writes if p.type == "ok" and p.end is not None), key=lambda p: p.end)
    windows_sorted = sorted(history.fault_windows, key=lambda w: w.start)
    recoveries = [_recovery(w, ok_writes, windows_sorted[i + 1].start if i + 1 < len(windows_sorted) else None)
                  for i, w in enumerate(windows_sorted)]
    windows = _gaps(writes, ok_writes, gap_threshold_s)

    counts: dict[str, int | float] = {
        "client_ops": len(client), "ok_ops": sum(p.type == "ok" for p in client),
        "ok_writes": len(ok_writes), "faults": len(recoveries),
        "faults_without_recovery": sum(r.recovery_s is None for r in recoveries),
        "failovers": sum(r.failover for r in recoveries),
        "unavailability_windows": len(windows),
    }
    counts["ok_fraction"] = round(counts["ok_ops"] / len(client), 4) if client else 0.0
    counts.update(_stats("recovery", [r.recovery_s for r in recoveries if r.recovery_s is not None]))
    counts.update(_stats("failover", [r.failover_s for r in recoveries if r.failover_s is not None]))
    if windows:
        counts["worst_unavailable_s"] = round(max(b - a for a, b in windows), 3)
        counts["total_unavailable_s"] = round(sum(b - a for a, b in windows), 3)
    details = [_describe(r) for r in recoveries][:MAX_DETAILS]
    details += [f"unavailable {b - a:.3f} s: no ok write completed in t={a:.3f}..{b:.3f}"
                for a, b in windows][:MAX_DETAILS]
    if not ok_writes:
        details.append("no ok write in the history")
    return CheckResult(NAME, True, counts, tuple(details))


def _recovery(fault: FaultWindow, ok_writes: Sequence[Pair], next_start: float | None = None) -> Recovery:
    """ok_writes sorted by completion time."""
    before = [p for p in ok_writes if p.end is not None and p.end <= fault.start]
    after = [p for p in ok_writes if p.start >= fault.start]
    first = min(after, key=lambda p: p.end or 0.0) if after else None
    failover_s = None
    if before:
        old = _epoch(before[-1])
        new = [p for p in after if _epoch(p) != old and (next_start is None or p.start < next_start)]
        if new and _epoch(before[-1])[0] is not None:
            first_new = min(new, key=lambda p: p.end or 0.0)
            failover_s = None if first_new.end is None else first_new.end - fault.start
    return Recovery(
        fault,
        None if first is None or first.end is None else first.end - fault.start,
        _primary(before[-1]) if before else None,
        _primary(first) if first is not None else None,
        failover_s,
    )


def _epoch(p: Pair) -> tuple[object, ...]:
    return (_primary(p), p.get("timeline"), p.get("lease_epoch"))


def _primary(p: Pair) -> str | None:
    primary = p.get("primary")
    return None if primary is None else str(primary)


def _gaps(writes: Sequence[Pair], ok_writes: Sequence[Pair], threshold_s: float) -> list[tuple[float, float]]:
    if not writes:
        return []
    ends = sorted(p.end for p in ok_writes if p.end is not None)
    first_invoke = min(p.start for p in writes)
    last = max([p.start for p in writes] + ends)
    marks = [first_invoke, *ends, last]
    return [(a, b) for a, b in zip(marks, marks[1:], strict=False) if b - a > threshold_s]


def _stats(name: str, values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {f"median_{name}_s": round(statistics.median(values), 3), f"worst_{name}_s": round(max(values), 3)}


def _describe(r: Recovery) -> str:
    stop = f"{r.fault.stop:.3f}" if r.fault.stop is not None else "never stopped"
    head = f"fault {r.fault.f} t={r.fault.start:.3f}..{stop}"
    if r.recovery_s is None:
        return f"{head}: no ok write invoked after it started"
    switch = f", failover {r.primary_before} -> {r.primary_after}: new primary epoch after {r.failover_s:.3f} s" \
        if r.failover_s is not None else ""
    return f"{head}: first ok write {r.recovery_s:.3f} s after start{switch}"
