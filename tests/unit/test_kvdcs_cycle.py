"""What one HA cycle costs the replicated KV (issue 15): every command is a Raft log entry that each voter
encrypts, pickles and acknowledges, so an idle cycle must not rewrite what did not change.

Counts the commands an adapter on the in-memory KV sends (its reads are local; each counted call is one
log entry on the embedded Raft, whose client API is the same).
"""

from __future__ import annotations

from typing import Any

import pytest

from raftpg.clock import FakeClock
from raftpg.consensus.api import UnknownOutcome
from raftpg.consensus.memory import MemoryKv
from raftpg.dcs.base import DcsError
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.kvdcs import KvDcs
from raftpg.model import Member

T = 5.0
TTL = 10.0


class CountingKv(MemoryKv):
    """MemoryKv that records each command (put/touch/delete) and each barrier a linearizable read needs."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.calls: list[tuple[str, str]] = []
        self.touch_fails: list[Exception] = []
        self.barrier_timeouts: list[float] = []
        self.touch_takes_s = 0.0  # how far a touch moves the adapter's clock (see the unknown-fate test)
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def put(self, key: str, value: str, **kwargs: Any) -> Any:
        self.calls.append(("put", key))
        return super().put(key, value, **kwargs)

    def touch(self, key: str, **kwargs: Any) -> Any:
        self.calls.append(("touch", key))
        self.now += self.touch_takes_s
        if self.touch_fails:
            raise self.touch_fails.pop(0)
        return super().touch(key, **kwargs)

    def range(self, prefix: str, *, linearizable: bool = False, timeout_s: float = 5.0) -> Any:
        if linearizable:
            self.calls.append(("barrier", prefix))
            self.barrier_timeouts.append(timeout_s)
        return super().range(prefix, linearizable=linearizable, timeout_s=timeout_s)


@pytest.fixture
def kv() -> CountingKv:
    return CountingKv(FakeClock())


@pytest.fixture
def dcs(kv: CountingKv) -> KvDcs:
    return KvDcs(kv, KeyLayout("/service/", "c1"))


def cycle(dcs: KvDcs, me: Member, lsn: int | None = None) -> None:
    """What the HA loop asks of the store in one cycle: read as itself, publish, (primary) status."""
    dcs.load(timeout_s=T, member=me.name)
    dcs.touch_member(me, TTL, timeout_s=T)
    if lsn is not None:
        dcs.set_status(lsn, timeout_s=T)


def test_an_idle_cycle_is_one_log_entry_a_touch_of_the_own_member_key(kv: CountingKv, dcs: KvDcs) -> None:
    primary = Member("n1", role="primary", state="running", lsn=50331648)
    cycle(dcs, primary, 50331648)  # the first cycle writes both documents
    kv.calls.clear()
    for _ in range(3):
        cycle(dcs, primary, 50331648)
    assert kv.calls == [("touch", "/service/c1/members/n1")] * 3


def test_the_refreshing_read_keeps_the_member_key_alive_without_a_rewrite(kv: CountingKv, dcs: KvDcs) -> None:
    me = Member("n2", role="replica", state="streaming")
    cycle(dcs, me)
    for _ in range(10):  # 30 s of a 10 s TTL
        kv._clock.advance(3.0)  # type: ignore[attr-defined]
        kv.expire_due()
        cycle(dcs, me)
    assert [m.name for m in dcs.load(timeout_s=T).members] == ["n2"]
    assert [c for c in kv.calls if c[0] == "put"] == [("put", "/service/c1/members/n2")]


def test_a_change_is_written_in_the_cycle_it_is_seen(kv: CountingKv, dcs: KvDcs) -> None:
    cycle(dcs, Member("n1", role="primary", lsn=100), 100)
    kv.calls.clear()
    cycle(dcs, Member("n1", role="primary", lsn=200), 200)
    assert kv.calls == [("touch", "/service/c1/members/n1"), ("put", "/service/c1/members/n1"),
                        ("put", "/service/c1/status")]
    view = dcs.load(timeout_s=T)
    assert view.members[0].lsn == 200 and view.last_lsn == 200


def test_a_skip_needs_a_read_of_its_own(kv: CountingKv, dcs: KvDcs) -> None:
    """Each refreshing read spares at most one rewrite: without a read in between, the document is written."""
    me = Member("n1", role="replica")
    cycle(dcs, me, 5)
    kv.calls.clear()
    dcs.load(timeout_s=T, member="n1")
    dcs.touch_member(me, TTL, timeout_s=T)
    dcs.touch_member(me, TTL, timeout_s=T)
    dcs.set_status(5, timeout_s=T)
    dcs.set_status(5, timeout_s=T)
    assert kv.calls == [("touch", "/service/c1/members/n1"), ("put", "/service/c1/members/n1"),
                        ("put", "/service/c1/status")]


def test_a_new_ttl_is_written_even_when_the_document_is_the_same(kv: CountingKv, dcs: KvDcs) -> None:
    me = Member("n1", role="replica")
    cycle(dcs, me)
    dcs.load(timeout_s=T, member="n1")
    kv.calls.clear()
    dcs.touch_member(me, TTL * 2, timeout_s=T)  # ttl changed in the dynamic config
    assert kv.calls == [("put", "/service/c1/members/n1")]
    assert dcs.load(timeout_s=T).members[0].name == "n1"


def test_reads_of_others_and_plain_reads_keep_the_old_behaviour(kv: CountingKv, dcs: KvDcs) -> None:
    me = Member("n1", role="replica")
    cycle(dcs, me)
    kv.calls.clear()
    dcs.load(timeout_s=T)  # e.g. a REST operation's read: a plain barrier, refreshes nothing
    dcs.touch_member(me, TTL, timeout_s=T)
    dcs.load(linearizable=False, timeout_s=T, member="n1")  # a local read is no barrier: nothing refreshed
    dcs.touch_member(me, TTL, timeout_s=T)
    assert kv.calls == [("barrier", "/service/c1/"), ("put", "/service/c1/members/n1"),
                        ("put", "/service/c1/members/n1")]


def test_a_touch_of_unknown_fate_falls_back_to_a_barrier_and_spares_nothing(
        kv: CountingKv, dcs: KvDcs, monkeypatch: pytest.MonkeyPatch) -> None:
    me = Member("n1", role="replica")
    cycle(dcs, me)
    kv.calls.clear()
    kv.touch_fails.append(UnknownOutcome("Raft leadership changed during the request"))
    monkeypatch.setattr(dcs, "_clock", kv)  # the adapter's budget clock: the KV moves it as a touch takes time
    kv.touch_takes_s = 1.5  # the failed touch used part of the read's budget
    view = dcs.load(timeout_s=T, member="n1")
    dcs.touch_member(me, TTL, timeout_s=T)
    assert [m.name for m in view.members] == ["n1"]
    assert kv.calls == [("touch", "/service/c1/members/n1"), ("barrier", "/service/c1/"),
                        ("put", "/service/c1/members/n1")]
    assert kv.barrier_timeouts == [pytest.approx(T - 1.5)], "the barrier gets what is left, not a new budget"


def test_an_unreachable_store_fails_the_read_with_a_dcs_error(kv: CountingKv, dcs: KvDcs) -> None:
    cycle(dcs, Member("n1", role="replica"))
    dcs.load(timeout_s=T, member="n1")  # a read that could spare the next write, but...
    kv.reachable = False
    with pytest.raises(DcsError, match="read cluster: no quorum"):
        dcs.load(timeout_s=T, member="n1")
    kv.reachable = True
    kv.calls.clear()
    dcs.touch_member(Member("n1", role="replica"), TTL, timeout_s=T)  # that failed read spares nothing
    assert kv.calls == [("put", "/service/c1/members/n1")]
