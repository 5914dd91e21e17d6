"""The in-memory node (MemoryKv) and the thread-safe shell (GuardedState) with watch."""

from __future__ import annotations

import threading

import pytest

from raftpg.clock import FakeClock
from raftpg.consensus import KvRejected, MemoryKv, NoQuorum
from raftpg.consensus.api import KvError, KvTimeout, StoreFailed, UnknownOutcome
from raftpg.consensus.state import GuardedState
from raftpg.kv import (
    VALUE_BYTES_MAX,
    Committed,
    Conflict,
    Guard,
    InvariantViolation,
    Rejected,
    decode,
    delete_command,
    put_command,
    restore_command,
)

WAIT_S = 10.0  # an upper bound for a thread to finish; reached only if the code under test is broken


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def kv(clock):
    return MemoryKv(clock)


# ------------------------------------------------------------------------------------------ MemoryKv


def test_memory_kv_put_get_range_and_guards(kv):
    assert isinstance(kv.put("/s/leader", "n1", guard=Guard(exists=False)), Committed)
    lost = kv.put("/s/leader", "n2", guard=Guard(exists=False))
    assert isinstance(lost, Conflict) and lost.guard == "must_not_exist" and lost.current.value == "n1"
    assert kv.put("/s/members/a", "{}").revision == 2
    revision, kvs = kv.range("/s/", linearizable=True)
    assert revision == 2 and [x.key for x in kvs] == ["/s/leader", "/s/members/a"]
    assert kv.get("/s/leader", linearizable=True).value == "n1"
    assert isinstance(kv.delete("/s/leader", guard=Guard(value="n2")), Conflict)
    assert isinstance(kv.delete("/s/leader", guard=Guard(value="n1")), Committed)
    assert kv.get("/s/leader") is None
    assert kv.status().revision == 3 and kv.status().has_quorum


def test_memory_kv_rejects_oversized_values_with_a_clear_error(kv):
    with pytest.raises(KvRejected, match="over the limit"):
        kv.put("k", "v" * (VALUE_BYTES_MAX + 1))
    with pytest.raises(KvRejected, match="ttl_s"):
        kv.put("k", "v", ttl_s=-1)
    assert kv.get("k") is None and kv.status().revision == 0


def test_memory_kv_without_quorum_fails_every_call_with_no_quorum(kv):
    kv.put("k", "v")
    kv.reachable = False
    for call in (lambda: kv.put("k", "w"), lambda: kv.touch("k"), lambda: kv.delete("k"),
                 lambda: kv.get("k", linearizable=True), lambda: kv.range("", linearizable=True)):
        with pytest.raises(NoQuorum) as caught:
            call()
        assert isinstance(caught.value, KvError) and caught.value.indeterminate is False
    assert kv.get("k").value == "v"  # a local read still answers
    kv.reachable = True
    assert isinstance(kv.put("k", "w"), Committed)


def test_memory_kv_leases_expire_on_the_leaders_clock_and_renewals_restart_them(kv, clock):
    kv.put("/s/leader", "n1", ttl_s=30)
    clock.advance(29.9)
    assert kv.expire_due() == []
    kv.touch("/s/leader", guard=Guard(value="n1"))
    clock.advance(29.9)
    assert kv.expire_due() == []  # 59.8 s after the put, 29.9 s after the renewal
    clock.skew_wall(-3600)  # wall time means nothing to leases
    assert kv.expire_due() == []
    clock.advance(0.1)
    assert kv.expire_due() == ["/s/leader"]
    assert kv.get("/s/leader") is None


def test_memory_kv_new_leader_restarts_every_countdown(kv, clock):
    kv.put("lease", "x", ttl_s=10)
    kv.expire_due()
    clock.advance(9)
    kv.new_leader()
    clock.advance(9)
    assert kv.expire_due() == []  # 18 s since the put, 9 s since the election started the countdown
    clock.advance(1)
    assert kv.expire_due() == ["lease"]


def test_errors_say_whether_the_outcome_is_unknown():
    assert KvTimeout("x").indeterminate and UnknownOutcome("x").indeterminate
    assert not KvRejected("x").indeterminate and not StoreFailed("x").indeterminate
    assert NoQuorum("x", indeterminate=True).indeterminate and not NoQuorum("x").indeterminate


# ------------------------------------------------------------------------------------------ watch


def _waiter(state: GuardedState, prefix: str, after: int, timeout_s: float, **kwargs):
    box: dict = {}
    started = threading.Event()

    def run() -> None:
        started.set()
        box["revision"] = state.watch(prefix, after, timeout_s, **kwargs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(WAIT_S)
    return thread, box


def test_watch_wakes_a_waiting_thread_when_a_key_under_the_prefix_changes():
    state = GuardedState()
    state.apply(put_command("/s/a", "1"))
    thread, box = _waiter(state, "/s/", 1, timeout_s=60)
    state.apply(put_command("/other", "x"))  # not under the prefix: the waiter keeps waiting
    assert thread.is_alive()
    state.apply(put_command("/s/leader", "n1"))
    thread.join(WAIT_S)
    assert not thread.is_alive() and box["revision"] == 3


def test_watch_wakes_on_delete_and_on_expiry():
    state = GuardedState()
    state.apply(put_command("/s/leader", "n1", ttl_s=5))
    kv = state.get("/s/leader")
    thread, box = _waiter(state, "/s/", 1, timeout_s=60)
    state.apply(decode(b'{"v":1,"op":"expire","key":"/s/leader","refreshed":%d,"leader_monotonic":1}'
                       % kv.refreshed))
    thread.join(WAIT_S)
    assert box["revision"] == 2
    state.apply(put_command("/s/x", "1"))
    thread, box = _waiter(state, "/s/", 3, timeout_s=60)
    state.apply(delete_command("/s/x"))
    thread.join(WAIT_S)
    assert box["revision"] == 4


def test_watch_times_out_with_none_when_nothing_changes():
    state = GuardedState()
    state.apply(put_command("/s/a", "1"))
    assert state.watch("/s/", 1, timeout_s=0.05) is None
    thread, box = _waiter(state, "/s/", 1, timeout_s=0.2)
    state.apply(put_command("/elsewhere", "1"))
    thread.join(WAIT_S)
    assert not thread.is_alive() and box["revision"] is None


def test_watch_ignores_prefixes_it_is_told_to():
    state = GuardedState()
    thread, box = _waiter(state, "/s/", 0, timeout_s=60, ignore=("/s/members/",))
    state.apply(put_command("/s/members/a", "{}"))
    assert thread.is_alive()
    state.apply(put_command("/s/leader", "a"))
    thread.join(WAIT_S)
    assert box["revision"] == 2


def test_watch_returns_at_once_for_changes_already_made_or_history_it_no_longer_has():
    state = GuardedState()
    state.apply(put_command("/s/a", "1"))
    state.apply(put_command("/s/a", "2"))
    assert state.watch("/s/", 1, timeout_s=60) == 2  # already changed after revision 1
    state.restore(state.snapshot())  # a Raft snapshot install: the event history is gone
    assert state.watch("/s/", 0, timeout_s=60) == 2  # cannot tell: the caller must re-read


# ------------------------------------------------------------------------------------------ fail closed


def test_an_invariant_violation_stops_the_store():
    state = GuardedState()
    state.apply(put_command("k", "v"))

    def backwards(command):
        state._state.revision -= 5
        return Committed(state._state.revision, None)

    state._state._dispatch = backwards  # simulate a bug that moves the revision backwards
    result = state.apply(put_command("k", "w"))
    assert isinstance(result, Rejected) and "store stopped" in result.reason
    with pytest.raises(StoreFailed):
        state.check_failed()
    assert isinstance(state.apply(put_command("k", "x")), Rejected)  # and stays stopped
    assert issubclass(StoreFailed, KvError) and InvariantViolation


def test_an_exception_in_apply_stops_the_store_instead_of_escaping():
    state = GuardedState()

    def broken(command):
        raise TypeError("a bug")

    state._state._dispatch = broken
    result = state.apply(put_command("k", "v"))  # must not raise into pysyncobj's thread
    assert isinstance(result, Rejected) and "a bug" in result.reason
    with pytest.raises(StoreFailed):
        state.check_failed()


def test_an_unreadable_snapshot_stops_the_store():
    state = GuardedState()
    state.apply(put_command("k", "v"))
    state.restore({"v": 1, "revision": "nonsense"})
    with pytest.raises(StoreFailed, match="snapshot"):
        state.check_failed()


def test_restore_through_the_shell_seeds_an_empty_store():
    source = GuardedState()
    source.apply(put_command("a", "1"))
    target = GuardedState()
    assert isinstance(target.apply(restore_command(source.snapshot())), Committed)
    assert target.get("a").value == "1"
