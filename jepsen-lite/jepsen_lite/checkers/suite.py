"""Run the checkers that fit a history's workload and render a verdict summary.

``check_all`` picks checkers by the ops present (``checkers`` in the options overrides): the set and
no-concurrent-primaries checkers for ``insert``/``read-all`` histories (and no-concurrent-primaries for any
history whose writes carry ``primary``), the register checker for ``read``/``write``/``cas``, availability
always. A malformed history (``HistoryError``) gives that checker ``"unknown"`` with the reason, so one
harness bug never hides the other checkers' results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jepsen_lite.checkers import availability, bank, bootstrap, handover, health, primaries, register, sets
from jepsen_lite.checkers.result import UNKNOWN, CheckResult
from jepsen_lite.history import History, HistoryError

CHECKER_NAMES = (sets.NAME, bank.NAME, primaries.NAME, register.NAME, bootstrap.NAME, handover.NAME,
                 health.NAME, availability.NAME)


@dataclass(frozen=True)
class CheckOptions:
    lost_allowed: bool = False  # True for asynchronous replication: lost acked inserts only warn
    min_acked: int = 200  # FAULTS.md §5.4: fewer acked writes (during faults) => inconclusive
    min_epochs: int = 2  # no-concurrent-primaries needs a primary change to say anything
    min_register_ops: int = 50
    register_max_steps: int = 2_000_000
    register_max_seconds: float | None = 60.0
    gap_threshold_s: float = 1.0
    min_bootstrap_rounds: int = 3
    checkers: tuple[str, ...] | None = None  # None: chosen from the workload


def applicable(history: History) -> tuple[str, ...]:
    fs = {p.f for p in history.pairs}
    chosen = []
    if fs & {"insert", "read-all"}:
        chosen.append(sets.NAME)
    if fs & {"transfer", "bank-final", "bank-setup"}:
        chosen.append(bank.NAME)
    if fs & {"insert", "read-all", "transfer"} or any(p.get("primary") is not None for p in history.pairs):
        chosen.append(primaries.NAME)
    if fs & register.REGISTER_FS:
        chosen.append(register.NAME)
    if "bootstrap" in fs:
        chosen.append(bootstrap.NAME)
    if any(op.f == "stop-group" for op in history.nemesis_ops()):
        chosen.append(handover.NAME)
    if health.F in fs:
        chosen.append(health.NAME)
    chosen.append(availability.NAME)
    return tuple(chosen)


def _runners(opts: CheckOptions) -> dict[str, Callable[[History], CheckResult]]:
    return {
        sets.NAME: lambda h: sets.check(h, lost_allowed=opts.lost_allowed, min_acked=opts.min_acked),
        bank.NAME: lambda h: bank.check(h, lost_allowed=opts.lost_allowed, min_acked=opts.min_acked),
        bootstrap.NAME: lambda h: bootstrap.check(h, min_rounds=opts.min_bootstrap_rounds),
        handover.NAME: lambda h: handover.check(h),
        health.NAME: lambda h: health.check(h),
        primaries.NAME: lambda h: primaries.check(h, min_acked=opts.min_acked, min_epochs=opts.min_epochs),
        register.NAME: lambda h: register.check(
            h, min_ops=opts.min_register_ops, max_steps=opts.register_max_steps,
            max_seconds=opts.register_max_seconds),
        availability.NAME: lambda h: availability.check(h, gap_threshold_s=opts.gap_threshold_s),
    }


def check_all(history: History, opts: CheckOptions | None = None) -> list[CheckResult]:
    opts = opts or CheckOptions()
    runners = _runners(opts)
    names = opts.checkers if opts.checkers is not None else applicable(history)
    unknown_names = set(names) - set(runners)
    if unknown_names:
        raise ValueError(f"unknown checkers {sorted(unknown_names)}; known: {list(CHECKER_NAMES)}")
    results = []
    for name in names:
        try:
            results.append(runners[name](history))
        except HistoryError as e:
            results.append(CheckResult(name, UNKNOWN, {}, (f"malformed history: {e}",)))
    return results


def overall(results: Sequence[CheckResult]) -> str:
    if any(r.valid is False for r in results):
        return "INVALID"
    if not results or any(r.valid is not True for r in results):
        return "UNKNOWN"
    return "VALID"


def summary(results: Sequence[CheckResult]) -> str:
    """One block per checker ending with ``<name>: VALID|INVALID|UNKNOWN``; the last line is overall."""
    lines: list[str] = []
    for r in results:
        lines.append(f"== {r.name} ==")
        if r.counts:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in r.counts.items()))
        lines.extend(f"  {d}" for d in r.details)
        lines.append(f"{r.name}: {r.verdict}")
    lines.append(overall(results))
    return "\n".join(lines)
