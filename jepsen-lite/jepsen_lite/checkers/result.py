"""CheckResult, the verdict rule shared by every checker, and the evidence count (FAULTS.md §5.4).

Verdict rule: a proven violation makes the result invalid whatever the amount of evidence (a counterexample
needs no quorum); without one, too little evidence makes it ``"unknown"`` (inconclusive), never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from jepsen_lite.history import FaultWindow, Pair

Valid = bool | Literal["unknown"]
UNKNOWN: Literal["unknown"] = "unknown"
MAX_LISTED = 20  # values listed in one detail line before eliding


@dataclass(frozen=True)
class CheckResult:
    name: str
    valid: Valid
    counts: Mapping[str, int | float] = field(default_factory=dict)
    details: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return {True: "VALID", False: "INVALID"}.get(self.valid, "UNKNOWN")  # type: ignore[arg-type]


def verdict(violated: bool, enough_evidence: bool) -> Valid:
    if violated:
        return False
    return True if enough_evidence else UNKNOWN


def listed(values: Iterable[object]) -> str:
    """A short, sorted rendering of a collection for a detail line."""
    items = sorted(values, key=lambda v: (type(v).__name__, repr(v)))
    shown = ", ".join(repr(v) for v in items[:MAX_LISTED])
    return f"[{shown}{', ...' if len(items) > MAX_LISTED else ''}] ({len(items)})"


def acked_evidence(acked: Sequence[Pair], windows: Sequence[FaultWindow]) -> tuple[int, str]:
    """How many acknowledged ops count as evidence, and what was counted.

    With nemesis faults in the history only ops whose [invoke, complete] overlaps a fault window count
    (FAULTS.md §5.4: "< 200 acked writes during faults ⇒ inconclusive"); without faults, all of them.
    """
    if not windows:
        return len(acked), "acknowledged ops (no faults recorded)"
    during = sum(1 for p in acked
                 if any(w.overlaps(p.start, p.end if p.end is not None else p.start) for w in windows))
    return during, "acknowledged ops during faults"


def evidence_detail(have: int, what: str, need: int) -> str:
    return f"inconclusive: {have} {what} < minimum {need}"
