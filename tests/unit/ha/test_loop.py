"""The HA loop's own bookkeeping, on the real HaLoop with a FakeClock, the in-memory DCS and FakePostgres."""

from __future__ import annotations

import threading
from typing import Any

from raftpg.clock import FakeClock
from raftpg.consensus.memory import MemoryKv
from raftpg.dcs.base import DcsError
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha.actions import MEMBER_POLL_S, REPLICA_STARTED_POLL_S
from raftpg.ha.inputs import Me
from raftpg.ha.lease import STOP_LEAD_S, Timing
from raftpg.ha.loop import HaLoop
from raftpg.model import PeerAnswer
from raftpg.testing.fake_postgres import FakePostgres, PgNetwork

SHORT = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "postgresql": {"use_slots": True}}


def new_loop(name: str = "n1", bootstrap_dcs: dict[str, Any] | None = None) -> tuple[HaLoop, FakeClock, Any]:
    clock = FakeClock()
    dcs = memory_dcs(clock, KeyLayout("/service/", "t"))
    pg = FakePostgres(name, PgNetwork(clock), clock)
    me = Me(name, conn_url=f"postgresql://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni")
    loop = HaLoop(dcs=dcs, pg=pg, watchdog=None, clock=clock, me=me, bootstrap_dcs=bootstrap_dcs or SHORT,
                  version="test")
    return loop, clock, dcs


def test_the_bootstrap_cycle_runs_on_bootstrap_dcs_not_on_the_defaults():
    """Before the config key exists, ttl/loop_wait come from bootstrap.dcs: the new primary's first lease
    is ttl long and it cycles again after loop_wait (not Patroni's defaults of 30 s and 10 s)."""
    loop, clock, dcs = new_loop()
    sent = clock.monotonic()
    loop.cycle()
    assert loop.pg.is_primary  # type: ignore[union-attr]
    assert loop.executor.lease.deadline is not None
    assert loop.executor.lease.deadline - sent <= SHORT["ttl"]
    assert loop.timing.loop_wait_s == SHORT["loop_wait"] and loop.timing.ttl_s == SHORT["ttl"]


def test_an_action_that_keeps_failing_backs_off_to_loop_wait_and_a_success_resets_the_pace():
    """jepsen-lite saw the loop go round every 0.2 s for as long as an action kept failing (a server out
    of connection slots). The first retry is quick; each further failure in a row doubles the wait, up to
    loop_wait; the first cycle that succeeds resets it."""
    loop, clock, dcs = new_loop(bootstrap_dcs={**SHORT, "ttl": 30, "loop_wait": 10, "retry_timeout": 10})
    loop.cycle()
    pg: FakePostgres = loop.pg  # type: ignore[assignment]
    assert pg.is_primary
    pg.fail_next["start"] = 7
    pg.crash()
    waits = []
    for _ in range(7):
        decision = loop.cycle()
        assert loop.status.error is not None  # the restart failed
        waits.append(loop.next_wake_s(decision, ok=False))
        clock.advance(waits[-1])
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0]
    decision = loop.cycle()  # the eighth start succeeds
    assert loop.status.error is None and pg.is_primary and loop.memory.failed_in_a_row == 0
    pg.fail_next["start"] = 1
    pg.crash()
    decision = loop.cycle()
    assert loop.next_wake_s(decision, ok=False) == 0.2


def test_a_node_that_waits_on_another_members_key_looks_again_within_a_second_not_after_loop_wait():
    """Found from outside at Patroni's defaults (loop_wait 10): a new replica read the cluster 17 ms before
    the new primary's member key said "running", decided "waiting for a running primary to clone from",
    and slept the whole loop_wait, because the loop's watch does not wake on member keys (they change every
    cycle). The bootstrap took 13.6 s to three healthy nodes. Such waits poll every MEMBER_POLL_S now."""
    clock = FakeClock()
    network, kv = PgNetwork(clock), MemoryKv(clock)
    profile = {**SHORT, "ttl": 30, "loop_wait": 10, "retry_timeout": 10}
    loops = {}
    for name in ("n1", "n2"):
        me = Me(name, conn_url=f"postgresql://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni")
        loops[name] = HaLoop(dcs=memory_dcs(clock, KeyLayout("/service/", "t"), kv), pg=FakePostgres(name, network, clock),
                             watchdog=None, clock=clock, me=me, bootstrap_dcs=profile, version="test")
    n1, n2 = loops["n1"], loops["n2"]
    n1.cycle()
    assert n1.pg.is_primary  # type: ignore[union-attr]
    n1.dcs.delete_member("n1", timeout_s=1)  # as if n2 read before n1 published its member key
    decision = n2.cycle()
    assert decision.reason == "waiting for a running primary to clone from"
    assert n2.next_wake_s(decision, ok=True) == MEMBER_POLL_S < profile["loop_wait"]
    n1.cycle()  # the member key is back: n2 clones at its next look
    cloned = n2.cycle()
    assert cloned.reason.startswith("creating a replica from n1") and n2.pg.running  # type: ignore[union-attr]
    # it published "running"; the next cycle, a second later (not as soon as a member wait: its WAL receiver
    # needs a moment), sees the WAL receiver and says "streaming"
    assert n2.next_wake_s(cloned, ok=True) == REPLICA_STARTED_POLL_S > MEMBER_POLL_S
    settled = n2.cycle()
    assert settled.reason == "no action: I am n2, a replica of n1"
    assert n2.next_wake_s(settled, ok=True) == profile["loop_wait"]  # a decision that waits on nothing


def test_the_primary_keeps_the_permanent_slots_of_the_dynamic_config_and_drops_removed_ones():
    slots = {"keep_wal": {"type": "physical"}, "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"},
             "n2": None}  # a bare name: a physical slot
    loop, clock, dcs = new_loop(bootstrap_dcs={**SHORT, "slots": slots})
    for _ in range(3):
        loop.cycle()
        clock.advance(1)
    pg: FakePostgres = loop.pg  # type: ignore[assignment]
    assert pg.is_primary
    assert pg.slots == {"keep_wal", "n2"}
    assert pg.logical_slots == {"cdc": ("app", "pgoutput")}
    config = dcs.load(timeout_s=1).config.to_dict()
    dcs.set_config({**config, "slots": {"keep_wal": None}}, dcs.load(timeout_s=1).config_revision, timeout_s=1)
    loop.cycle()
    assert pg.slots == {"keep_wal"} and pg.logical_slots == {}


def test_a_primary_starts_demoting_early_enough_to_have_stopped_writes_by_ttl_minus_safety_margin():
    """bench/safety_bench.py measured writes refused 5.01 s after the last renewal at ttl 10 with a 5 s
    safety margin: the demotion began exactly at the line and the fast stop took 10 ms more. It begins
    STOP_LEAD_S earlier now; at short TTLs the fence margin still rules."""
    assert Timing(10, 1, 4).demote_margin_s == 5.0 + STOP_LEAD_S
    assert Timing(30, 10, 10).demote_margin_s == 5.0 + STOP_LEAD_S
    short = Timing(4, 1, 1)
    assert short.demote_margin_s == short.fence_margin_s + 1.0 > 4 / 2 + STOP_LEAD_S


def test_a_clean_shutdown_publishes_the_member_stopped_before_it_releases_the_key():
    """Regression (full test run): a cleanly stopped primary left its last member key (running, its last
    position) behind; a replica at the same position lost the tie-break to it by name and did not promote
    until the key expired."""
    loop, clock, dcs = new_loop()
    loop.cycle()
    loop.cycle()
    assert dcs.load(timeout_s=1).member("n1").state == "running"
    loop.shutdown()
    view = dcs.load(timeout_s=1)
    assert view.leader is None and view.member("n1").state == "stopped"
    assert not view.member("n1").is_running


def settled_primary() -> tuple[HaLoop, FakeClock, Any]:
    loop, clock, dcs = new_loop()
    for _ in range(4):  # registered, then the config key stored by a chore
        loop.cycle()
        clock.advance(1)
    assert dcs.load(timeout_s=1).config_revision is not None and loop.pg.is_primary  # type: ignore[union-attr]
    return loop, clock, dcs


def pause(loop: HaLoop, dcs: Any, clock: FakeClock) -> None:
    view = dcs.load(timeout_s=1)
    assert dcs.set_config({**view.config.to_dict(), "pause": True}, view.config_revision, timeout_s=1)
    loop.cycle()
    clock.advance(1)


def test_a_stop_while_paused_leaves_the_primary_running_marked_detached_until_a_new_agent_fences_it():
    """Patroni's agent upgrade: pause, stop the agent, PostgreSQL keeps serving. The stopping agent keeps
    the key (it expires with its TTL) and records ``detached_primary``: with the server unfenced, nobody
    else may promote, even after a resume. The next agent adopts the server, takes the key, renews it
    (the fence is back) and only then removes the mark."""
    loop, clock, dcs = settled_primary()
    pg: FakePostgres = loop.pg  # type: ignore[assignment]
    pause(loop, dcs, clock)
    loop.shutdown()
    view = dcs.load(timeout_s=1)
    assert pg.is_primary and pg.detached and pg.fence_deadline is None
    assert view.config.detached_primary == "n1" and view.leader is not None and view.leader.name == "n1"
    # resumed while the agent is away, and the key expired: the mark stays
    assert dcs.set_config({**view.config.to_dict(), "pause": False}, view.config_revision, timeout_s=1)
    clock.advance(30)
    dcs.kv.expire_due()
    assert dcs.load(timeout_s=1).leader is None and dcs.load(timeout_s=1).config.detached_primary == "n1"
    upgraded = HaLoop(dcs=dcs, pg=pg, watchdog=None, clock=clock, me=loop.me, bootstrap_dcs=SHORT, version="new")
    for _ in range(4):
        upgraded.cycle()
        clock.advance(1)
    view = dcs.load(timeout_s=1)
    assert view.leader is not None and view.leader.name == "n1" and pg.is_primary and not pg.detached
    assert pg.fence_deadline is not None and view.config.detached_primary is None
    assert "detached_primary" not in view.config.to_dict()


def test_a_paused_replica_is_left_running_without_a_mark_and_an_unpaused_stop_still_stops():
    loop, clock, dcs = settled_primary()
    pg: FakePostgres = loop.pg  # type: ignore[assignment]
    loop.shutdown()  # not paused: the usual clean stop
    assert not pg.running and dcs.load(timeout_s=1).leader is None
    loop, clock, dcs = settled_primary()
    pg = loop.pg  # type: ignore[assignment]
    pause(loop, dcs, clock)
    pg.crash()
    assert dcs.release_leader("n1", timeout_s=1)
    pg.start(None, None, as_replica=True, timeout_s=5)  # a standby now (e.g. demoted by hand)
    loop.cycle()
    assert pg.running and pg.in_recovery
    loop.shutdown()
    assert pg.running and pg.detached and dcs.load(timeout_s=1).config.detached_primary is None


def test_a_paused_stop_that_cannot_record_the_mark_stops_postgres_as_usual():
    loop, clock, dcs = settled_primary()
    pg: FakePostgres = loop.pg  # type: ignore[assignment]
    pause(loop, dcs, clock)
    view = dcs.load(timeout_s=1)  # the config changes after the agent's last look: the mark's CAS fails
    assert dcs.set_config({**view.config.to_dict(), "loop_wait": 2}, view.config_revision, timeout_s=1)
    loop.shutdown()
    assert not pg.running and dcs.load(timeout_s=1).config.detached_primary is None
    assert dcs.load(timeout_s=1).leader is None


def primary_and_background_copier(bootstrap_dcs: dict[str, Any]) -> tuple[FakeClock, PgNetwork, Any, dict]:
    """n1 (bootstraps the cluster) and n2, whose copies run in the background as the agent's do."""
    clock = FakeClock()
    network = PgNetwork(clock)
    dcs = memory_dcs(clock, KeyLayout("/service/", "t"))
    loops = {}
    for name in ("n1", "n2"):
        me = Me(name, conn_url=f"postgresql://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni")
        loops[name] = HaLoop(dcs=dcs, pg=FakePostgres(name, network, clock), watchdog=None, clock=clock, me=me,
                             bootstrap_dcs=bootstrap_dcs, version="test", clone_in_background=name == "n2")
    return clock, network, dcs, loops


def test_a_clone_runs_in_the_background_while_the_loop_keeps_the_member_key_fresh_with_its_progress():
    """Issue 14: pg_basebackup ran inside the HA loop with a one-hour cap; nothing was published for as
    long as it ran. Now the loop keeps cycling: the member key says "creating replica" and the progress,
    the status too, and the half-copied data directory is neither observed nor decided on; once the copy
    ends, the next cycles start the replica."""
    clock, network, dcs, loops = primary_and_background_copier(SHORT)
    for _ in range(3):
        loops["n1"].cycle()
        clock.advance(1)
    replica: FakePostgres = loops["n2"].pg  # type: ignore[assignment]
    replica.clone_gate = threading.Event()
    loops["n2"].cycle()  # starts the copy
    job = loops["n2"].executor.clone_job
    assert job is not None and not job.finished
    assert dcs.load(timeout_s=1).member("n2").state == "creating replica"  # from the cycle that started it
    assert loops["n2"].status.state == "creating replica"
    for _ in range(3):
        decision = loops["n2"].cycle()
        clock.advance(1)
        assert decision.actions == () and "creating a replica from n1 43 %" in decision.reason
    status = loops["n2"].status
    assert status.state == "creating replica" and status.progress == 43
    member = dcs.load(timeout_s=1).member("n2")
    assert member.state == "creating replica" and member.progress == 43
    replica.clone_gate.set()
    assert job.wait(10)
    for _ in range(3):
        loops["n2"].cycle()
        clock.advance(1)
    assert replica.running and replica.in_recovery and loops["n2"].executor.clone_job is None
    assert loops["n2"].status.state != "creating replica"
    assert dcs.load(timeout_s=1).member("n2").progress is None


def run_both(clock: FakeClock, network: PgNetwork, loops: dict, cycles: int, until) -> bool:
    """Cycle n1 and n2 (each waiting for its background copy) a second apart until ``until()``."""
    for _ in range(cycles):
        for name in ("n1", "n2"):
            loops[name].cycle()
            job = loops[name].executor.clone_job
            if job is not None:
                assert job.wait(5)
        network.step()
        clock.advance(1)
        if until():
            return True
    return False


def test_the_repair_ladders_reclone_in_the_background_ends_with_a_streaming_replica():
    """A replica stuck for good (only a fresh clone cures it) climbs the ladder: rewind, then a re-clone,
    which now runs in the background. Once the copy is done it must be started as a replica, not taken
    for a former primary (the copy says "in production") and cloned again and again (a full test run
    saw that loop)."""
    clock, network, dcs, loops = primary_and_background_copier(
        {**SHORT, "postgresql": {"use_slots": True, "use_pg_rewind": False}})

    def run(cycles: int, until) -> bool:
        return run_both(clock, network, loops, cycles, until)

    replica: FakePostgres = loops["n2"].pg  # type: ignore[assignment]
    assert run(30, lambda: replica.streaming)
    replica.stuck = "hard"
    assert run(5, lambda: not replica.streaming)
    assert run(120, lambda: replica.streaming and replica.stuck is None), "the re-clone did not end streaming"
    assert len(replica.kept_data_dirs) == 1, replica.kept_data_dirs  # one re-clone, not one per cycle


def test_a_replica_keeps_copies_of_the_slots_the_primary_publishes_and_moves_them_forward() -> None:
    """The primary publishes its slots' positions and its own position in the status key; a replica keeps
    a copy of each (but its own), advanced to those positions (the wiring: chores, executor, status key;
    what the copies hold on real PostgreSQL is tested in test_pg and the cluster tests)."""
    clock, network, dcs, loops = primary_and_background_copier(SHORT)
    primary: FakePostgres = loops["n1"].pg  # type: ignore[assignment]
    replica: FakePostgres = loops["n2"].pg  # type: ignore[assignment]
    assert run_both(clock, network, loops, 30, lambda: replica.streaming and "n1" in replica.slots)
    assert primary.slots == {"n2"} and replica.slots == {"n1"}
    status = dict(dcs.load(timeout_s=1).slot_positions)
    assert status == {"n1": primary.lsn, "n2": primary.lsn}
    assert replica.slot_positions == {"n1": primary.lsn}, "the copy is advanced to the published position"
    primary.wal.append(network.new_record())
    run_both(clock, network, loops, 2, lambda: False)
    assert replica.slot_positions == {"n1": primary.lsn}


def test_a_former_primary_whose_rewind_fails_is_cloned_once_and_then_started():
    """Campaign cell double-failover-s2 (etcd): pg_rewind failed (its source was still starting up), the
    node cloned afresh, and then moved every new copy aside and cloned again, twice a second, for as long
    as the loop ran (143 copies in 76 s): the failed rewind's flag outlived the data it was about. A new
    copy is started as a replica."""
    rewinding = {**SHORT, "postgresql": {"use_slots": True, "use_pg_rewind": True}}
    clock, network, dcs, loops = primary_and_background_copier(rewinding)
    n1: FakePostgres = loops["n1"].pg  # type: ignore[assignment]
    n2: FakePostgres = loops["n2"].pg  # type: ignore[assignment]
    assert run_both(clock, network, loops, 30, lambda: n2.streaming)
    n1.crash()  # agent and PostgreSQL killed: only n2 cycles until it has taken over
    for _ in range(40):
        dcs.kv.expire_due()  # the in-memory store plays the Raft leader
        loops["n2"].cycle()
        network.step()
        clock.advance(1)
        if n2.is_primary:
            break
    assert n2.is_primary
    me = Me("n1", conn_url="postgresql://n1:5432/postgres", api_url="http://n1:8008/patroni")
    loops["n1"] = HaLoop(dcs=dcs, pg=n1, watchdog=None, clock=clock, me=me, bootstrap_dcs=rewinding,
                         version="test", clone_in_background=True)  # the agent restarted
    n1.fail_next["rewind"] = 1
    assert run_both(clock, network, loops, 60, lambda: n1.streaming), "the former primary never streamed again"
    assert len(n1.kept_data_dirs) == 1, n1.kept_data_dirs  # one copy after the failed rewind, not one per cycle


def test_a_promotion_is_published_as_soon_as_postgresql_is_promoted():
    """Issue 15: health checks answered from the last cycle's status until the promotion cycle had also
    made the slots, written the history row and cleared the failover key; a switchover client waited that
    long for its first write. The status says "primary" right after the promote, under the held lease."""
    clock, network, dcs, loops = primary_and_background_copier(SHORT)
    n2: FakePostgres = loops["n2"].pg  # type: ignore[assignment]
    assert run_both(clock, network, loops, 30, lambda: n2.streaming)
    published: list[tuple[str, bool, float, bool]] = []
    loops["n2"]._on_status = lambda s: published.append(  # type: ignore[method-assign]
        (s.decision, s.holds_leader_key, s.lease_valid_s, n2.is_primary))
    checkpointed_after: list[int] = []  # how many statuses were out when the post-promotion checkpoint ran
    real_checkpoint = n2.checkpoint

    def checkpoint(timeout_s: float = 60.0) -> None:
        checkpointed_after.append(len(published))
        real_checkpoint(timeout_s)
    n2.checkpoint = checkpoint  # type: ignore[method-assign]
    loops["n1"].pg.crash()  # type: ignore[union-attr]
    for _ in range(40):
        dcs.kv.expire_due()
        loops["n2"].cycle()
        network.step()
        clock.advance(1)
        if n2.is_primary:
            break
    interim = [p for p in published if p[0] == "promoted"]
    assert interim == [("promoted", True, interim[0][2], True)] and interim[0][2] > 0, published
    assert published.index(interim[0]) == len(published) - 2, "published before the cycle's own status"
    # not after the forced checkpoint, which waits for PostgreSQL's end-of-recovery one (a switchover's gap)
    assert checkpointed_after and checkpointed_after[-1] == published.index(interim[0]) + 1, checkpointed_after


def test_every_wait_under_a_lease_uses_one_budget_rule():
    """LeaseState.budget: the one formula for DCS calls, the loop's sleep and the failsafe round (it was
    written out four times)."""
    from raftpg.ha.inputs import LeaseState
    assert LeaseState().budget(4.0, now=100.0, demote_margin_s=5.0) == 4.0  # no lease: the cap
    assert LeaseState(110.0).budget(4.0, now=100.0, demote_margin_s=5.0) == 4.0
    assert LeaseState(110.0).budget(4.0, now=103.0, demote_margin_s=5.0) == 2.0  # stops at the demotion point
    assert LeaseState(110.0).budget(4.0, now=106.0, demote_margin_s=5.0) == 0.2  # past it: the floor
    assert LeaseState(110.0).budget(1.0, now=106.0, demote_margin_s=5.0, floor_s=0.05) == 0.05


def test_an_idle_primary_reads_the_dcs_once_a_cycle_and_again_only_after_changing_it():
    """After acting, the loop re-reads the DCS so its status shows the cycle's outcome. An idle primary's
    actions (renew the key, publish a position the view already holds) change nothing the view shows; on
    etcd that re-read was one request a second (issue 15). A moved position is re-read: the status shows
    it at once."""
    loop, clock, dcs = settled_primary()
    pg: FakePostgres = loop.pg  # type: ignore[assignment]
    loop.cycle()  # publishes the settled position once more if the last cycle moved it
    clock.advance(1)
    reads: list[bool] = []
    load = dcs.load

    def counting_load(*, linearizable: bool = True, **kwargs: Any) -> Any:
        reads.append(linearizable)
        return load(linearizable=linearizable, **kwargs)

    dcs.load = counting_load  # type: ignore[method-assign]
    for _ in range(3):
        loop.cycle()
        clock.advance(1)
    assert reads == [True, True, True]  # the cycle's own linearizable read, nothing after it
    assert loop.status.view is not None and loop.status.view.last_lsn == pg.lsn
    pg.write(5)
    reads.clear()
    loop.cycle()
    assert reads == [True, False]  # published a new position: read again, cheaply
    assert loop.status.view is not None and loop.status.view.last_lsn == pg.lsn


class _Outage:
    """The in-memory DCS, with reads failing while ``down``; records what the loop watches from."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down, self.watched = inner, False, []

    def load(self, **kwargs: Any) -> Any:
        if self.down:
            raise DcsError("read cluster: no quorum: this node reaches 1 of 3 voters")
        return self.inner.load(**kwargs)

    def watch(self, after_revision: int, timeout_s: float) -> bool:
        self.watched.append(after_revision)
        return True  # something changed: the store is back

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_after_a_failed_read_the_loop_watches_from_the_last_view_it_had():
    """Found from outside at loop_wait 10: two of three Raft voters restarted; the third had sent an
    acquire of the leader key whose outcome was unknown. It committed when the quorum came back, but the
    node, whose last read had failed, slept its whole loop_wait without a watch: the cluster had a
    leader key and no primary for 9 s. Now the watch starts from the revision of the last view it had."""
    clock = FakeClock()
    kv = MemoryKv(clock)
    outage = _Outage(memory_dcs(clock, KeyLayout("/service/", "t"), kv))
    me = Me("n1", conn_url="postgresql://n1:5432/postgres", api_url="http://n1:8008/patroni")
    loop = HaLoop(dcs=outage, pg=FakePostgres("n1", PgNetwork(clock), clock), watchdog=None, clock=clock,  # type: ignore[arg-type]
                  me=me, bootstrap_dcs=SHORT, version="test")
    loop.cycle()
    loop.cycle()
    seen = loop.status.view.revision  # type: ignore[union-attr]
    outage.down = True
    decision = loop.cycle()
    assert loop.status.view is None and decision.reason.startswith("DCS unreachable")
    waiting = threading.Thread(target=loop._wait, args=(decision, True), daemon=True)
    waiting.start()
    waiting.join(5)  # the FakeClock does not move: without a watch the wait would never end
    assert not waiting.is_alive() and outage.watched[:1] == [seen]


class _Answers:
    """What the other members answer a failover candidate (in the agent: raftpg.api.peers over REST)."""

    def __init__(self) -> None:
        self.answers: dict[str, PeerAnswer] = {}
        self.asked: list[tuple[str, ...]] = []

    def positions(self, members: tuple[tuple[str, str], ...], timeout_s: float) -> tuple[PeerAnswer, ...]:
        self.asked.append(tuple(name for name, _url in members))
        return tuple(self.answers.get(name, PeerAnswer(name, error="no answer")) for name, _url in members)


def test_a_failover_candidate_ranks_the_others_by_what_they_answer_not_by_their_keys():
    """At loop_wait 10 a replica's member key can be ten seconds old when the leader key expires, older
    than the old primary's last WAL: ranked by keys, a replica behind another could win the race and
    lose what the other had. Patroni asks every member for its position at that moment; so does raftpg
    now, with or without quorum commit, and a member that answers it runs as a primary stops the race."""
    clock = FakeClock()
    network, kv = PgNetwork(clock), MemoryKv(clock)
    profile = {**SHORT, "ttl": 30, "loop_wait": 10, "retry_timeout": 10}
    asked = _Answers()
    loops = {}
    for name in ("n1", "n2", "n3"):
        me = Me(name, conn_url=f"postgresql://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni")
        loops[name] = HaLoop(dcs=memory_dcs(clock, KeyLayout("/service/", "t"), kv), pg=FakePostgres(name, network, clock),
                             watchdog=None, clock=clock, me=me, bootstrap_dcs=profile, version="test",
                             position_peers=asked if name == "n2" else None)
    n1, n2, n3 = loops["n1"], loops["n2"], loops["n3"]
    for _ in range(4):
        for loop in (n1, n2, n3):
            loop.cycle()
        clock.advance(1)
    assert n1.pg.is_primary and n2.pg.running and n3.pg.running  # type: ignore[union-attr]
    assert asked.asked == []  # nobody asks while the leader key is held
    n1.pg.crash()  # type: ignore[union-attr]
    n1.dcs.release_leader("n1", timeout_s=1)  # its lease ended ...
    n1.dcs.delete_member("n1", timeout_s=1)  # ... and so did its member key
    mine = n2.pg.observe().lsn or 0  # type: ignore[union-attr]

    asked.answers["n3"] = PeerAnswer("n3", in_recovery=True, lsn=mine + 100, timeline=1)  # its key says mine
    assert n2.cycle().reason == "not promoting: n3 is healthier"
    assert asked.asked == [("n3",)] and not n2.pg.is_primary  # type: ignore[union-attr]

    asked.answers["n3"] = PeerAnswer("n3", in_recovery=False, lsn=mine, timeline=1)
    assert n2.cycle().reason == "not promoting: n3 answers that its PostgreSQL runs as a primary"

    asked.answers["n3"] = PeerAnswer("n3", in_recovery=True, lsn=mine, timeline=1)  # equal: the name decides
    assert n2.cycle().reason == "failover: the leader key was free and I am the healthiest replica"
    assert n2.pg.is_primary  # type: ignore[union-attr]
