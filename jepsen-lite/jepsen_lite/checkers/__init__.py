"""Checkers: pure functions ``check(history, **params) -> CheckResult``, run offline on stored histories.

``sets`` (C1), ``primaries`` (C2), ``register`` (C3, on the generic ``wgl`` search), ``availability`` (C6);
``suite`` runs those fitting a workload and renders the summary. Checkers import only ``jepsen_lite.history``
and each other's constants: no processes, sockets or clocks (the WGL search budget reads wall time only to
stop). Honesty rules (FAULTS.md §5): ``info`` is "maybe", never "fail"; a proven violation is invalid; too
little evidence is ``"unknown"``, never a pass.
"""

from jepsen_lite.checkers.result import UNKNOWN, CheckResult
from jepsen_lite.checkers.suite import CheckOptions, check_all, overall, summary

__all__ = ["UNKNOWN", "CheckOptions", "CheckResult", "check_all", "overall", "summary"]
