"""hand_over: a stopping Raft leader's transfer of leadership, asked again while pysyncobj refuses it or
the target's election fails, and never again once an election is under way."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from raftpg.clock import FakeClock
from raftpg.consensus.api import KvError, KvTimeout
from raftpg.node import HANDOVER_ATTEMPT_S, HANDOVER_RETRY_S, hand_over

ME, TARGET = "127.0.0.1:5011", "127.0.0.1:5012"


@dataclass
class Status:
    self_addr: str
    state: str
    leader: str | None


class Raft:
    """Each transfer_leadership call takes the next outcome: "refused" (the target is an entry behind),
    "failed" (sent; the target's election failed, this node still leads after the wait), "stepped down"
    (sent; an election is under way, no leader yet), "ok" (the target leads)."""

    def __init__(self, clock: FakeClock, outcomes: list[str], elected_after_s: float = 0.0) -> None:
        self.clock, self.outcomes, self.elected_after_s = clock, list(outcomes), elected_after_s
        self.calls: list[float] = []
        self.state, self.leader, self.elected_at = "leader", ME, None

    def status(self) -> Status:
        if self.elected_at is not None and self.clock.monotonic() >= self.elected_at:
            self.state, self.leader = "follower", TARGET
        return Status(ME, self.state, self.leader)

    def transfer_leadership(self, addr: str | None, timeout_s: float = 5.0) -> str:
        assert addr is None and timeout_s > 0 and self.state == "leader", "asked only while leading"
        self.calls.append(self.clock.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else "refused"
        if outcome == "refused":
            raise KvError("leadership transfer refused: denied")
        if outcome == "failed":
            self.clock.advance(timeout_s)
            raise KvTimeout("leadership transfer sent but no new leader within the timeout")
        if outcome == "stepped down":
            self.state, self.leader = "follower", None
            self.elected_at = self.clock.monotonic() + self.elected_after_s
            self.clock.advance(timeout_s)
            raise KvTimeout("leadership transfer sent but no new leader within the timeout")
        self.state, self.leader = "follower", TARGET
        return TARGET


def test_a_refused_transfer_is_asked_again_until_the_target_has_caught_up():
    """Seen from outside: one refused attempt, and the next primary came 2.7 s after the released key."""
    clock = FakeClock()
    raft = Raft(clock, ["refused", "refused", "refused", "ok"])
    assert hand_over(raft, 2.0, clock) == TARGET
    assert [round(b - a, 3) for a, b in zip(raft.calls, raft.calls[1:], strict=False)] == [HANDOVER_RETRY_S] * 3


def test_a_transfer_whose_election_failed_is_asked_again_while_this_node_still_leads():
    """Seen in tests: no new leader within 2 s in two clean stops of three (the target lacked an entry that
    arrived after it was asked, so the voters refused it and this node won the next term)."""
    clock = FakeClock()
    raft = Raft(clock, ["failed", "failed", "ok"])
    assert hand_over(raft, 2.0, clock) == TARGET
    assert len(raft.calls) == 3 and raft.calls[1] - raft.calls[0] == pytest.approx(HANDOVER_ATTEMPT_S)


def test_once_an_election_is_under_way_it_only_waits_for_its_outcome():
    clock = FakeClock()
    raft = Raft(clock, ["stepped down"], elected_after_s=0.3)
    assert hand_over(raft, 2.0, clock) == TARGET
    assert len(raft.calls) == 1  # a second timeout_now would start yet another term


def test_it_gives_up_at_the_deadline():
    clock = FakeClock()
    always = Raft(clock, [])
    with pytest.raises(KvError, match="refused"):
        hand_over(always, 0.5, clock)
    assert clock.monotonic() - always.calls[0] <= 0.5
    clock = FakeClock()
    nobody = Raft(clock, ["stepped down"], elected_after_s=60)
    with pytest.raises(KvTimeout, match="no other Raft leader"):
        hand_over(nobody, 2.0, clock)
    assert len(nobody.calls) == 1
