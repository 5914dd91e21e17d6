"""hand_over: a stopping Raft leader's transfer of leadership, retried while pysyncobj refuses it."""

from __future__ import annotations

import pytest

from raftpg.clock import FakeClock
from raftpg.consensus.api import KvError, KvTimeout
from raftpg.node import HANDOVER_RETRY_S, hand_over


class Raft:
    """Refuses ``refusals`` times (the target is an entry behind), then hands over, or raises ``then``."""

    def __init__(self, clock: FakeClock, refusals: int, then: Exception | None = None) -> None:
        self.clock, self.refusals, self.then = clock, refusals, then
        self.calls: list[float] = []

    def transfer_leadership(self, addr: str | None, timeout_s: float = 5.0) -> str:
        assert addr is None and timeout_s > 0
        self.calls.append(self.clock.monotonic())
        if len(self.calls) <= self.refusals:
            raise KvError("leadership transfer refused: denied")
        if self.then is not None:
            raise self.then
        return "127.0.0.1:5012"


def test_a_refused_transfer_is_tried_again_until_the_target_has_caught_up():
    """Seen from outside: one refused attempt, and the next primary came 2.7 s after the released key."""
    clock = FakeClock()
    raft = Raft(clock, refusals=3)
    assert hand_over(raft, 2.0, clock) == "127.0.0.1:5012"
    assert len(raft.calls) == 4
    assert [round(b - a, 3) for a, b in zip(raft.calls, raft.calls[1:], strict=False)] == [HANDOVER_RETRY_S] * 3


def test_refusals_stop_at_the_deadline_and_a_sent_transfer_is_not_repeated():
    clock = FakeClock()
    always = Raft(clock, refusals=10_000)
    with pytest.raises(KvError, match="refused"):
        hand_over(always, 0.5, clock)
    assert clock.monotonic() - always.calls[0] <= 0.5 and len(always.calls) == pytest.approx(0.5 / HANDOVER_RETRY_S, abs=1)
    unconfirmed = Raft(FakeClock(), refusals=1, then=KvTimeout("no new leader within the timeout"))
    with pytest.raises(KvTimeout):
        hand_over(unconfirmed, 2.0, unconfirmed.clock)
    assert len(unconfirmed.calls) == 2  # the timeout_now went out once; a second would start another election
