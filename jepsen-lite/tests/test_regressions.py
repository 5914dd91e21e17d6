"""Histories of INVALID runs kept as regression inputs (``jepsen-lite/regressions/``, trimmed to what the
failing checker reads): the checker must keep reporting each of them. The table says which checker and
what it found; ``regressions/README.md`` says which run each came from and what it meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from jepsen_lite.checkers import CheckOptions, check_all
from jepsen_lite.history import History

REGRESSIONS = Path(__file__).resolve().parent.parent / "regressions"
EXPECTED = {
    # file: (checker, verdict, words in a detail line, or None)
    "stop-group-no-handover-etcd.jsonl": ("handover", False, "slow handover"),
    # a checker's false alarm: refused connections taken for failed compares (must stay VALID)
    "register-refused-cas-raft.jsonl": ("linearizable-register", True, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_regression_history_is_still_flagged(name: str) -> None:
    checker, valid, words = EXPECTED[name]
    history = History.read(REGRESSIONS / name)
    (result,) = check_all(history, CheckOptions(checkers=(checker,), min_acked=1))
    assert result.valid is valid, result.details
    assert words is None or any(words in d for d in result.details), result.details


def test_every_kept_history_has_an_expectation() -> None:
    assert sorted(p.name for p in REGRESSIONS.glob("*.jsonl")) == sorted(EXPECTED)


def test_no_two_clients_of_a_run_share_a_process_id() -> None:
    """Campaign defect (stop 24): the bank workload's total readers and the W6 health pollers were both
    numbered from 30_000, so in every bank cell each poller died at its first invoke ("already has an
    outstanding op") and the health checker, which runs only on health ops, silently had nothing to judge.
    The bases are apart now, and a workload refuses to adopt a client under a process id it already runs."""
    from types import SimpleNamespace

    from jepsen_lite.bank import READER_PROCESS_BASE
    from jepsen_lite.health_oracle import HEALTH_PROCESS_BASE
    from jepsen_lite.workloads import EXTRA_PROCESS_BASE, READ_PROCESS_BASE, Workload

    bases = sorted([READ_PROCESS_BASE, EXTRA_PROCESS_BASE, READER_PROCESS_BASE, HEALTH_PROCESS_BASE])
    assert all(b - a >= 10_000 for a, b in zip(bases, bases[1:], strict=False)), bases
    running = SimpleNamespace(clients=[SimpleNamespace(process=READER_PROCESS_BASE)])
    with pytest.raises(ValueError, match="already one of this workload's clients"):
        Workload.adopt(running, SimpleNamespace(process=READER_PROCESS_BASE))  # type: ignore[arg-type]
