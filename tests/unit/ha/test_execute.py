"""The executor's own decisions: what it does when an action cannot be carried out as asked."""

from __future__ import annotations

from raftpg.clock import FakeClock
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha import actions as act
from raftpg.ha.decide import decide
from raftpg.ha.execute import Executor, Timing
from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
from raftpg.ha.memory import after_actions
from raftpg.model import ClusterView, DataDir, DynamicConfig, Leader, Member
from raftpg.testing.fake_postgres import FakePostgres, PgNetwork

TIMING = Timing(ttl_s=10, loop_wait_s=1, retry_timeout_s=4)


def url(name: str) -> str:
    return f"postgresql://replicator@{name}:5432/postgres"


def diverged_old_primary() -> tuple[FakePostgres, FakePostgres, PgNetwork, FakeClock]:
    clock = FakeClock()
    network = PgNetwork(clock)
    old, new = FakePostgres("old", network, clock), FakePostgres("new", network, clock)
    old.bootstrap()
    old.ensure_slots({"new"})
    new.clone(url("old"), 60)
    new.start(url("old"), "new", as_replica=True, timeout_s=10)
    network.step()
    old.crash()
    old.wal.append(network.new_record())  # WAL the new primary never received: needs a rewind
    new.promote(10)
    return old, new, network, clock


def run_rejoin(old: FakePostgres, clock: FakeClock, use_pg_rewind: bool, memory: Memory | None = None) -> bool:
    """decide's rejoin for the diverged old primary, carried out by the executor."""
    dcs = memory_dcs(clock, KeyLayout("/service/", "t"))
    executor = Executor(dcs, old, None, clock, Me("old"))
    new_member = Member("new", role="primary", state="running", conn_url=url("new"), timeline=2, lsn=1)
    view = ClusterView(initialize=old.sysid, config=DynamicConfig(use_pg_rewind=use_pg_rewind),
                       leader=Leader("new", 1), members=(new_member,))
    inputs = Inputs(view=view, local=old.observe(), me=Me("old"), lease=LeaseState(), memory=memory or Memory(),
                    now=clock.monotonic(), now_wall=clock.wall())
    return executor.run(decide(inputs), inputs, TIMING)


def test_an_unreachable_source_never_costs_the_data_dir():
    old, _, network, clock = diverged_old_primary()
    network.cut.add("old")
    assert run_rejoin(old, clock, use_pg_rewind=True) is False
    assert old.data_dir == DataDir.INITIALIZED and old.kept_data_dirs == []  # kept in place, retried later
    assert run_rejoin(old, clock, use_pg_rewind=False) is False
    assert old.data_dir == DataDir.INITIALIZED and old.kept_data_dirs == []
    network.cut.clear()
    assert run_rejoin(old, clock, use_pg_rewind=True) is True
    assert old.observe().running and old.observe().in_recovery


def test_without_pg_rewind_a_diverged_primary_is_recloned_and_its_data_kept_aside():
    old, _, _, clock = diverged_old_primary()
    assert run_rejoin(old, clock, use_pg_rewind=False) is True
    assert len(old.kept_data_dirs) == 1


def test_a_failed_rewind_is_followed_by_a_clone_not_by_a_retry():
    old, _, _, clock = diverged_old_primary()
    old.fail_next["rewind"] = 1
    dcs = memory_dcs(clock, KeyLayout("/service/", "t"))
    executor = Executor(dcs, old, None, clock, Me("old"))
    assert run_rejoin(old, clock, use_pg_rewind=True) is False
    memory = after_actions(Memory(), act.Decision((act.Rewind("new", url("new")),), "r"), False,
                           act.Rewind("new", url("new")), None)
    assert memory.rewind_failed
    assert run_rejoin(old, clock, use_pg_rewind=True, memory=memory) is True
    assert len(old.kept_data_dirs) == 1 and executor is not None


def test_a_finished_background_copy_is_taken_back_once_and_nothing_of_its_decision_is_carried_over():
    """After a background copy the next decision is made afresh (a copy that never started has
    ``backup_label`` and ``decide`` starts it as a replica): the job is handed back once, then forgotten;
    one still running is not handed back."""
    import threading

    from raftpg.ha.background import CloneJob

    ex = Executor.__new__(Executor)
    gate = threading.Event()
    ex.clone_job = CloneJob("n1", "postgresql://n1", lambda report: gate.wait(5))
    assert ex.take_clone_job() is None and ex.clone_job is not None  # still copying
    gate.set()
    assert ex.clone_job.wait(5)
    job = ex.clone_job
    assert ex.take_clone_job() is job and ex.clone_job is None and ex.take_clone_job() is None
