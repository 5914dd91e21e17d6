"""The Raft tick thread sleeps until its next deadline instead of a fixed 0.1 s (consensus/tickwait.py).

The pure tests pin the wait it computes; the in-process tests run real pysyncobj nodes on loopback with
the cap raised to 30 s, so anything that depended on the old fixed tick (a queued task, close(), a lease
expiry, an election) would stall for seconds past its deadline here instead of passing by luck.
"""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from raftpg.clock import FakeClock
from raftpg.consensus.leases import LeaseClock
from raftpg.consensus.raft import RaftNode, RaftSettings
from raftpg.consensus.tickwait import ELECTION_DUE, HEARTBEAT_DUE, RAFT_LOG, wait_s
from raftpg.kv import KvState, put_command
from raftpg.testing.poll import wait_until

CAP_S = 30.0


def fake_sync(leader: bool, heartbeat_at: float = 0.0, election_at: float = 0.0, commit_index: int = 7,
              last_index: int = 7, peers: int = 2) -> SimpleNamespace:
    return SimpleNamespace(_isLeader=lambda: leader, raftCommitIndex=commit_index, otherNodes={*range(peers)},
                           **{HEARTBEAT_DUE: heartbeat_at, ELECTION_DUE: election_at,
                              RAFT_LOG: [(b"", last_index - 1, 1), (b"", last_index, 1)]})


def test_a_leader_sleeps_until_its_heartbeat_or_the_next_lease_expiry_whichever_is_sooner():
    sync = fake_sync(leader=True, heartbeat_at=100.2, election_at=50.0)
    assert wait_s(sync, 100.0, None, 0.1, CAP_S) == pytest.approx(0.2, abs=0.002)
    assert wait_s(sync, 100.0, 0.05, 0.1, CAP_S) == pytest.approx(0.05, abs=0.002)
    assert wait_s(sync, 100.0, 7.0, 0.1, CAP_S) == pytest.approx(0.2, abs=0.002)


def test_a_leader_with_entries_to_commit_ticks_again_at_once_when_alone():
    assert wait_s(fake_sync(leader=True, heartbeat_at=100.2, last_index=8, peers=0), 100.0, None, 0.1, CAP_S) == 0
    # with followers their answers wake it; the fixed tick is only the fallback while none come
    assert wait_s(fake_sync(leader=True, heartbeat_at=100.2, last_index=8), 100.0, None, 0.1, CAP_S) == 0.1


def test_a_follower_sleeps_until_its_election_deadline():
    sync = fake_sync(leader=False, heartbeat_at=0.0, election_at=101.3)
    assert wait_s(sync, 100.0, 0.01, 0.1, CAP_S) == pytest.approx(1.3, abs=0.002)  # leases: leader only


def test_the_wait_is_capped_and_a_passed_deadline_falls_back_to_the_fixed_tick():
    assert wait_s(fake_sync(leader=False, election_at=200.0), 100.0, None, 0.1, 0.5) == 0.5
    # a follower connected to nobody keeps its deadline in the past: poll at the old period, not spin
    assert wait_s(fake_sync(leader=False, election_at=99.0), 100.0, None, 0.1, 0.5) == 0.1
    assert wait_s(fake_sync(leader=True, heartbeat_at=101.0), 100.0, -3.0, 0.1, 0.5) == 0.1


def test_a_pysyncobj_without_the_deadlines_it_reads_gets_the_fixed_tick():
    assert wait_s(SimpleNamespace(_isLeader=lambda: True), 100.0, None, 0.1, 0.5) == 0.1
    assert wait_s(SimpleNamespace(_isLeader=lambda: False), 100.0, None, 0.1, 0.5) == 0.1


def test_next_due_counts_down_to_the_soonest_expiry_then_to_its_re_proposal():
    clock, leases = FakeClock(), LeaseClock()
    state = KvState()
    assert leases.next_due_s(state, clock.monotonic()) is None
    state.apply(put_command("l", "me", ttl_s=3))
    state.apply(put_command("m", "you", ttl_s=10))
    state.apply(put_command("plain", "no lease"))
    leases.observe(state, clock.monotonic())
    assert leases.next_due_s(state, clock.monotonic()) == pytest.approx(3.0)
    clock.advance(2.5)
    assert leases.next_due_s(state, clock.monotonic()) == pytest.approx(0.5)
    clock.advance(0.5)
    [expire] = leases.due(state, clock.monotonic())
    assert expire["key"] == "l"
    # proposed: nothing to do until a re-proposal would be due, not on every tick until it applies
    assert leases.next_due_s(state, clock.monotonic()) == pytest.approx(1.0)
    clock.advance(1.0)
    assert leases.next_due_s(state, clock.monotonic()) == pytest.approx(0.0)


# ------------------------------------------------------------------ real pysyncobj nodes, in process


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def nodes():
    started: list[RaftNode] = []

    def start(self_addr: str, partners: tuple[str, ...] = ()) -> RaftNode:
        node = RaftNode(RaftSettings(self_addr=self_addr, partner_addrs=partners, data_dir=None,
                                     password="tick-wait-test", tick_max_s=CAP_S))
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


def lone_leader_with_a_30s_heartbeat(start) -> RaftNode:
    """A one-node cluster whose tick thread, once it leads, has nothing due for about 30 s."""
    node = start(free_addr())
    wait_until(lambda: node.status().state == "leader", 20, "the one-node cluster elects itself")
    node._sync.conf.appendEntriesPeriod = CAP_S  # pysyncobj reads it each time it schedules a heartbeat
    node.put("warm", "up", timeout_s=5)  # one more heartbeat scheduled on the new period
    return node


def test_pysyncobj_still_has_the_deadlines_the_wait_reads(nodes):
    node = nodes(free_addr())
    for name in (HEARTBEAT_DUE, ELECTION_DUE):
        assert isinstance(getattr(node._sync, name), float | int), name
    wait_until(lambda: node.status().state == "leader", 20, "the one-node cluster elects itself")
    node.put("k", "v", timeout_s=5)
    last = getattr(node._sync, RAFT_LOG)[-1]
    assert last[1] == node._sync.raftCommitIndex and last[2] == node._sync.raftCurrentTerm


def test_a_task_queued_for_the_sleeping_tick_thread_runs_at_once(nodes):
    node = lone_leader_with_a_30s_heartbeat(nodes)
    assert node._on_tick_thread(lambda: "ran", timeout_s=3.0) == "ran"


def test_close_does_not_wait_for_the_tick_thread_to_wake_by_itself(nodes):
    node = lone_leader_with_a_30s_heartbeat(nodes)
    closer = threading.Thread(target=node.close)
    closer.start()
    closer.join(5.0)
    assert not closer.is_alive(), "close() waited for the tick thread's next deadline"
    assert not node._sync.tick_thread_alive()


def test_a_lease_expires_on_time_although_the_leader_has_no_heartbeat_due(nodes):
    node = lone_leader_with_a_30s_heartbeat(nodes)
    node.put("lease", "holder", ttl_s=1.0, timeout_s=5)
    wait_until(lambda: node.get("lease") is None, 5.0, "the 1 s lease expires on the leader's clock")


def test_followers_still_elect_a_new_leader_when_the_leader_goes(nodes):
    addrs = [free_addr() for _ in range(3)]
    members = [nodes(a, tuple(p for p in addrs if p != a)) for a in addrs]

    def leader() -> RaftNode | None:
        leading = [m for m in members if m.running and m.status().state == "leader"]
        return leading[0] if len(leading) == 1 else None

    first = wait_until(leader, 20, "a first leader")
    first.put("k", "v", timeout_s=5)
    first.close()
    members.remove(first)
    second = wait_until(leader, 10, "a new leader among the two followers")
    assert second.get("k", linearizable=True, timeout_s=5).value == "v"
