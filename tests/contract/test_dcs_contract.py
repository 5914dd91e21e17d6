"""The DCS contract (raftpg/dcs/base.py), written once and run on every backend (see conftest.py):
the in-memory store, the embedded Raft (three voters on loopback), a real etcd, and a FAKE Consul
(Consul cannot be installed on these machines; the fake follows Consul's HTTP API documentation).
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from dcs_backends import BACKENDS, Backend, consul_client, etcd_client, start_raft

from raftpg.clock import FakeClock
from raftpg.consensus.memory import MemoryKv
from raftpg.dcs.base import Dcs, DcsError
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.model import Failover, HistoryEntry, Member, Tags
from raftpg.testing.consul_fake import FakeConsul

T = 5.0  # timeout_s for calls that are expected to answer


def leader_of(dcs: Dcs) -> str | None:
    view = dcs.load(timeout_s=T)
    return view.leader.name if view.leader else None


def member_names(dcs: Dcs) -> list[str]:
    return [m.name for m in dcs.load(timeout_s=T).members]


# ---------------------------------------------------------------------- initialization
def test_bootstrap_race_has_exactly_one_winner(backend: Backend) -> None:
    clients = [backend.dcs() for _ in range(8)]
    start = threading.Barrier(len(clients))
    results: list[bool] = []

    def race(dcs: Dcs) -> None:
        start.wait()
        results.append(dcs.initialize(timeout_s=T))

    threads = [threading.Thread(target=race, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 7 + [True]
    assert clients[0].load(timeout_s=T).initialize == ""


def test_set_and_cancel_initialize(backend: Backend) -> None:
    dcs = backend.dcs()
    assert dcs.initialize(timeout_s=T)
    dcs.cancel_initialize(timeout_s=T)  # the winner's initdb failed: the race is open again
    assert dcs.load(timeout_s=T).initialize is None
    assert dcs.initialize(timeout_s=T)
    dcs.set_initialize("7301234567890123456", timeout_s=T)
    assert dcs.load(timeout_s=T).initialize == "7301234567890123456"
    dcs.cancel_initialize(timeout_s=T)  # no effect once the system identifier is stored
    assert dcs.load(timeout_s=T).initialize == "7301234567890123456"
    assert not dcs.initialize(timeout_s=T)


# ---------------------------------------------------------------------- leader key
def test_leader_key_compare_and_set(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl = backend.ttl_s * 10  # long enough not to expire during the test
    held = a.acquire_leader("n1", ttl, timeout_s=T)
    assert held is not None and held.name == "n1"
    assert a.load(timeout_s=T).leader == held  # the revision returned is the key's
    assert b.acquire_leader("n2", ttl, timeout_s=T) is None
    assert a.acquire_leader("n1", ttl, timeout_s=T) is None  # must-not-exist, even for the holder
    assert b.renew_leader("n2", ttl, timeout_s=T) is None
    renewed = a.renew_leader("n1", ttl, timeout_s=T)
    assert renewed is not None and renewed.name == "n1"
    assert not b.release_leader("n2", timeout_s=T)
    assert not b.hand_over_leader("n2", "n3", ttl, timeout_s=T)
    assert leader_of(b) == "n1"


def test_leader_key_hand_over_and_release(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl = backend.ttl_s * 10
    assert a.acquire_leader("n1", ttl, timeout_s=T)
    assert a.hand_over_leader("n1", "n2", ttl, timeout_s=T)
    assert leader_of(b) == "n2"
    assert a.renew_leader("n1", ttl, timeout_s=T) is None
    assert not a.release_leader("n1", timeout_s=T)
    assert b.renew_leader("n2", ttl, timeout_s=T) is not None  # the candidate renews what it was handed
    assert b.release_leader("n2", timeout_s=T)
    assert leader_of(a) is None
    assert a.acquire_leader("n1", ttl, timeout_s=T) is not None


def test_renew_with_a_new_ttl_keeps_the_key(backend: Backend) -> None:
    dcs = backend.dcs()
    assert dcs.acquire_leader("n1", backend.ttl_s, timeout_s=T)
    renewed = dcs.renew_leader("n1", backend.ttl_s * 3, timeout_s=T)
    assert renewed is not None and renewed.name == "n1"
    assert dcs.load(timeout_s=T).leader == renewed
    assert dcs.renew_leader("n1", backend.ttl_s * 3, timeout_s=T) is not None


# ---------------------------------------------------------------------- TTL
def test_keys_stay_while_renewed(backend: Backend) -> None:
    dcs, ttl = backend.dcs(), backend.ttl_s
    assert dcs.acquire_leader("n1", ttl, timeout_s=T)
    dcs.touch_member(Member("n1", role="primary"), ttl, timeout_s=T)
    # renew every ttl/3 for longer than any key could live unrenewed: every read must still see them
    for _ in range(math.ceil(3 * backend.expiry_bound_s / ttl) + 1):
        backend.pass_time(ttl / 3)
        assert dcs.renew_leader("n1", ttl, timeout_s=T) is not None
        dcs.touch_member(Member("n1", role="primary"), ttl, timeout_s=T)
        view = dcs.load(timeout_s=T)
        assert view.leader is not None and view.leader.name == "n1"
        assert [m.name for m in view.members] == ["n1"]


def test_leader_key_expires_without_renewal(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    assert a.acquire_leader("n1", backend.ttl_s, timeout_s=T)
    backend.wait_until(lambda: leader_of(b) is None, "the leader key to expire", backend.expiry_bound_s + 2)
    assert a.renew_leader("n1", backend.ttl_s, timeout_s=T) is None  # too late: it is gone
    assert b.acquire_leader("n2", backend.ttl_s, timeout_s=T) is not None


def test_member_key_expires_without_touch(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    a.touch_member(Member("n1", role="replica"), backend.ttl_s, timeout_s=T)
    b.touch_member(Member("n2", role="replica"), backend.ttl_s * 20, timeout_s=T)
    backend.wait_until(lambda: member_names(b) == ["n2"], "member n1 to expire", backend.expiry_bound_s + 2)
    a.touch_member(Member("n1", role="replica"), backend.ttl_s, timeout_s=T)  # comes back when touched again
    assert member_names(b) == ["n1", "n2"]


# ---------------------------------------------------------------------- members and load
def test_member_keys_parse_into_the_view(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl = backend.ttl_s * 20
    a.touch_member(Member("n1", role="primary", state="running", lsn=50331648, timeline=2,
                          tags=Tags(nofailover=True), api_url="http://127.0.0.1:8008/patroni"), ttl, timeout_s=T)
    b.touch_member(Member("n2", role="replica", state="streaming"), ttl, timeout_s=T)
    view = a.load(timeout_s=T)
    n1, n2 = view.members
    assert (n1.name, n1.role, n1.state, n1.lsn, n1.timeline) == ("n1", "primary", "running", 50331648, 2)
    assert n1.tags.nofailover and n1.api_url == "http://127.0.0.1:8008/patroni" and n1.valid
    assert (n2.name, n2.role) == ("n2", "replica") and 0 < n2.revision <= view.revision
    b.touch_member(Member("n2", role="replica", state="running"), ttl, timeout_s=T)
    assert a.load(timeout_s=T).members[1].state == "running"
    b.delete_member("n2", timeout_s=T)
    assert member_names(a) == ["n1"]
    assert a.load(linearizable=False, timeout_s=T).revision >= view.revision


# ---------------------------------------------------------------------- the HA loop's cycle: read as me, then publish
# The loop reads with ``member=<its name>`` and then publishes its member key and (on the primary) the
# status. A KV store may make that read's barrier a refresh of the member key and then skip rewriting a
# document the read found unchanged (kvdcs.py); whatever a backend does, these must hold.
def test_a_member_that_reads_as_itself_and_republishes_the_same_document_stays(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl, me = backend.ttl_s, Member("n1", role="replica", state="streaming", lsn=50331648)
    a.touch_member(me, ttl, timeout_s=T)
    for _ in range(math.ceil(3 * backend.expiry_bound_s / ttl) + 1):
        backend.pass_time(ttl / 3)
        assert "n1" in [m.name for m in a.load(timeout_s=T, member="n1").members]
        a.touch_member(me, ttl, timeout_s=T)
        assert member_names(b) == ["n1"]


def test_a_changed_member_document_is_published_after_a_read_as_that_member(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl = backend.ttl_s * 20
    a.touch_member(Member("n1", role="replica", state="streaming", lsn=50331648), ttl, timeout_s=T)
    a.load(timeout_s=T, member="n1")
    a.touch_member(Member("n1", role="replica", state="streaming", lsn=50331700), ttl, timeout_s=T)
    assert [m.lsn for m in b.load(timeout_s=T).members] == [50331700]
    a.load(timeout_s=T, member="n1")
    a.touch_member(Member("n1", role="replica", state="stopped", lsn=50331700), ttl, timeout_s=T)
    assert [m.state for m in b.load(timeout_s=T).members] == ["stopped"]


def test_a_member_key_deleted_under_the_loop_is_back_after_its_next_cycle(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl, me = backend.ttl_s * 20, Member("n1", role="replica", state="streaming")
    a.touch_member(me, ttl, timeout_s=T)
    a.load(timeout_s=T, member="n1")
    b.delete_member("n1", timeout_s=T)  # e.g. an operator's cleanup between the loop's read and its write
    a.touch_member(me, ttl, timeout_s=T)  # may be skipped: the read before it found the document stored
    a.load(timeout_s=T, member="n1")  # the next cycle: its read finds no key (and does not recreate one)
    a.touch_member(me, ttl, timeout_s=T)
    assert member_names(b) == ["n1"]


def test_a_read_as_a_member_sees_every_write_acknowledged_before_it(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    b.touch_member(Member("n2", role="replica"), backend.ttl_s * 20, timeout_s=T)
    for lsn in (16777216, 16777300, 16777400):
        a.set_status(lsn, timeout_s=T)
        assert b.load(timeout_s=T, member="n2").last_lsn == lsn  # n2's refreshing read is a barrier
    assert b.load(timeout_s=T, member="nobody").last_lsn == 16777400  # no such member key: still a barrier


def test_the_status_is_rewritten_in_the_next_cycle_when_another_writer_changed_it(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    a.touch_member(Member("n1", role="primary"), backend.ttl_s * 20, timeout_s=T)
    a.set_status(67108864, timeout_s=T)
    a.load(timeout_s=T, member="n1")
    b.set_status(16777216, timeout_s=T)  # another writer, after a's read (an old primary handing over)
    a.set_status(67108864, timeout_s=T)  # may be skipped: a's read found this document stored
    a.load(timeout_s=T, member="n1")  # a's next cycle finds the other writer's document...
    a.set_status(67108864, timeout_s=T)  # ...and rewrites its own
    assert b.load(timeout_s=T).last_lsn == 67108864
    a.load(timeout_s=T, member="n1")
    a.set_status(67108864, timeout_s=T)  # found unchanged by the read: may be skipped, must still be there
    assert b.load(timeout_s=T).last_lsn == 67108864


# ---------------------------------------------------------------------- config, failover, sync, history, status
def test_config_compare_and_set(backend: Backend) -> None:
    dcs = backend.dcs()
    assert dcs.set_config({"ttl": 30, "loop_wait": 10}, None, timeout_s=T)
    assert not dcs.set_config({"ttl": 31}, None, timeout_s=T)  # None: must not exist yet
    first = dcs.load(timeout_s=T)
    assert first.config.ttl_s == 30 and first.config_revision is not None
    assert dcs.set_config({"ttl": 40}, first.config_revision, timeout_s=T)
    assert not dcs.set_config({"ttl": 50}, first.config_revision, timeout_s=T)  # stale revision
    assert dcs.load(timeout_s=T).config.ttl_s == 40


def test_failover_compare_and_set(backend: Backend) -> None:
    dcs = backend.dcs()
    assert dcs.set_failover(Failover("n1", "n2"), None, timeout_s=T)
    assert not dcs.set_failover(Failover(None, "n3"), None, timeout_s=T)
    first = dcs.load(timeout_s=T).failover
    assert first is not None and (first.leader, first.candidate) == ("n1", "n2")
    assert dcs.set_failover(Failover(None, "n3"), first.revision, timeout_s=T)
    assert not dcs.set_failover(None, first.revision, timeout_s=T)  # stale: the key moved on
    second = dcs.load(timeout_s=T).failover
    assert second is not None and second.candidate == "n3"
    assert dcs.set_failover(None, second.revision, timeout_s=T)
    assert dcs.load(timeout_s=T).failover is None


def test_sync_compare_and_set(backend: Backend) -> None:
    dcs = backend.dcs()
    first = dcs.set_sync("n1", ("n2",), None, timeout_s=T)
    assert first is not None and (first.leader, first.sync_standby) == ("n1", ("n2",))
    assert dcs.load(timeout_s=T).sync == first  # the revision returned is the key's
    second = dcs.set_sync("n1", ("n3", "n2"), first.revision, timeout_s=T)
    assert second is not None and second.sync_standby == ("n2", "n3")
    assert dcs.set_sync("n1", (), first.revision, timeout_s=T) is None  # stale revision
    assert dcs.load(timeout_s=T).sync == second
    assert dcs.set_sync(None, (), None, timeout_s=T) is not None  # None: unconditional


def test_history_and_status(backend: Backend) -> None:
    dcs = backend.dcs()
    dcs.set_history((HistoryEntry(1, 50331648, "no recovery target specified", 1700000000.0, "n2"),), timeout_s=T)
    dcs.set_status(67108864, timeout_s=T)
    view = dcs.load(timeout_s=T)
    (entry,) = view.history
    assert (entry.timeline, entry.lsn, entry.new_leader) == (1, 50331648, "n2")
    assert view.last_lsn == 67108864 and view.slot_positions == ()
    dcs.set_status(67108865, {"n2": 67108000, "n1": 67108865}, timeout_s=T)  # the primary's slots, and itself
    view = dcs.load(timeout_s=T)
    assert view.last_lsn == 67108865 and view.slot_positions == (("n1", 67108865), ("n2", 67108000))
    assert view.failsafe is None
    topology = {"n2": "http://127.0.0.1:8009/patroni", "n1": "http://127.0.0.1:8008/patroni"}
    dcs.set_status(67108866, {}, topology, timeout_s=T)  # failsafe_mode: the members the primary asks
    view = dcs.load(timeout_s=T)
    assert view.last_lsn == 67108866 and view.failsafe == tuple(sorted(topology.items()))


def test_delete_cluster_removes_every_key_of_the_scope_and_no_other(backend: Backend) -> None:
    dcs = backend.dcs()
    other = backend.make(KeyLayout(backend.layout.namespace, backend.layout.scope + "-other"))
    backend.clients.append(other)
    for store in (dcs, other):
        assert store.initialize(timeout_s=T)
        store.set_initialize("7123", timeout_s=T)
        assert store.set_config({"ttl": 30}, None, timeout_s=T)
        assert store.acquire_leader("n1", backend.ttl_s * 20, timeout_s=T) is not None
        store.touch_member(Member("n1", role="primary", state="running"), backend.ttl_s * 20, timeout_s=T)
        store.set_history((HistoryEntry(1, 50331648, "no recovery target specified", 1700000000.0, "n1"),), timeout_s=T)
    dcs.delete_cluster(timeout_s=T)
    view = dcs.load(timeout_s=T)
    assert (view.initialize, view.leader, view.members, view.history) == (None, None, (), ())
    assert dcs.initialize(timeout_s=T), "the scope can be bootstrapped afresh"
    kept = other.load(timeout_s=T)
    assert kept.initialize == "7123" and kept.leader is not None and [m.name for m in kept.members] == ["n1"]


# ---------------------------------------------------------------------- watch
def timed_watch(dcs: Dcs, revision: int, timeout_s: float) -> tuple[bool, float]:
    started = time.monotonic()
    woke = dcs.watch(revision, timeout_s)
    return woke, time.monotonic() - started


def test_watch_times_out_and_ignores_member_and_status_keys(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    a.touch_member(Member("n1", role="replica"), backend.ttl_s * 20, timeout_s=T)
    revision = a.load(timeout_s=T).revision
    woke, took = timed_watch(a, revision, 0.4)
    assert not woke and 0.3 <= took < 1.5
    b.touch_member(Member("n2", role="replica"), backend.ttl_s * 20, timeout_s=T)
    b.set_status(1234, timeout_s=T)
    woke, took = timed_watch(a, revision, 0.4)
    assert not woke and took >= 0.3


def test_watch_wakes_on_a_leader_key_change(backend: Backend) -> None:
    a, b = backend.dcs(), backend.dcs()
    ttl = backend.ttl_s * 20
    a.touch_member(Member("n1", role="replica"), ttl, timeout_s=T)
    revision = a.load(timeout_s=T).revision
    timer = threading.Timer(0.3, lambda: b.acquire_leader("n2", ttl, timeout_s=T))
    timer.start()
    woke, took = timed_watch(a, revision, 10.0)
    timer.join()
    assert woke and took < 5.0
    # the key going away (release) wakes a watcher too, also when it happened before the watch began
    revision = a.load(timeout_s=T).revision
    assert b.release_leader("n2", timeout_s=T)
    woke, took = timed_watch(a, revision, 10.0)
    assert woke and took < 5.0


# ---------------------------------------------------------------------- an unreachable store
@pytest.fixture(params=BACKENDS)
def cut_off(request: pytest.FixtureRequest, tmp_path):  # noqa: ANN201
    """A DCS client whose store has just become unreachable: a fresh store per test, then cut."""
    name = request.param
    layout = KeyLayout("/service/", "cut")
    cleanup = []
    if name == "memory":
        kv = MemoryKv(FakeClock())
        dcs = memory_dcs(FakeClock(), layout, kv)
        cut = lambda: setattr(kv, "reachable", False)  # noqa: E731
    elif name == "raft":
        nodes = start_raft(tmp_path)
        dcs, cleanup = nodes[0], nodes
        cut = lambda: [node.close() for node in nodes[1:]]  # noqa: E731 - its peers are gone
    elif name == "etcd":
        etcd = request.getfixturevalue("etcd_factory")()
        dcs = etcd_client([etcd.endpoint])(layout)
        cut, cleanup = etcd.kill, [dcs]
    else:
        fake = FakeConsul(min_session_ttl_s=0.1).start()
        dcs = consul_client(fake.url)(layout)
        cut, cleanup = fake.stop, [dcs]
    revision = dcs.load(timeout_s=T).revision  # reachable until now
    cut()
    yield dcs, revision
    for item in cleanup:
        item.close()


@pytest.mark.parametrize("call", ["load", "acquire_leader", "renew_leader", "touch_member", "set_config"])
def test_unreachable_store_raises_dcs_error_within_the_timeout(cut_off, call: str) -> None:  # noqa: ANN001
    dcs, _ = cut_off
    calls = {
        "load": lambda: dcs.load(timeout_s=1.0),
        "acquire_leader": lambda: dcs.acquire_leader("n1", 30, timeout_s=1.0),
        "renew_leader": lambda: dcs.renew_leader("n1", 30, timeout_s=1.0),
        "touch_member": lambda: dcs.touch_member(Member("n1", role="replica"), 30, timeout_s=1.0),
        "set_config": lambda: dcs.set_config({"ttl": 30}, None, timeout_s=1.0),
    }
    started = time.monotonic()
    with pytest.raises(DcsError) as raised:
        calls[call]()
    assert time.monotonic() - started < 2.5, "the DcsError must come within about timeout_s"
    assert str(raised.value)


def test_watch_on_an_unreachable_store_returns_false_after_the_timeout(cut_off) -> None:  # noqa: ANN001
    dcs, revision = cut_off
    woke, took = timed_watch(dcs, revision, 0.5)
    assert woke is False and took < 2.5
