"""raftpg.ha.slots by table: what the primary publishes and which copies a replica keeps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from raftpg.ha import memory as memories
from raftpg.ha.actions import FollowSlots
from raftpg.ha.chores import chores
from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
from raftpg.ha.slots import published, replica_slots
from raftpg.model import ClusterView, DataDir, DynamicConfig, Leader, LocalState, Member, PermanentSlot

LSN = 0x5000000
PUBLISHED = (("n1", LSN), ("n2", LSN - 100), ("n3", LSN - 200), ("perm", LSN - 300))


def view(leader: str | None = "n1", **config: Any) -> ClusterView:
    raw = {"slots": {"perm": {"type": "physical"}, "cdc": {"type": "logical", "database": "d", "plugin": "p"}},
           **config}
    members = tuple(Member(name=n, role="primary" if n == leader else "replica", state="running", lsn=LSN,
                           api_url=f"http://{n}:8008/patroni", conn_url=f"postgresql://{n}:5432/postgres")
                    for n in ("n1", "n2", "n3"))
    return ClusterView(initialize="7", config=DynamicConfig.from_dict(raw), config_revision=3,
                       leader=Leader(leader, 5) if leader else None, members=members, slot_positions=PUBLISHED,
                       revision=10)


REPLICA = LocalState(data_dir=DataDir.INITIALIZED, running=True, in_recovery=True, lsn=LSN, streaming=True)
PRIMARY = LocalState(data_dir=DataDir.INITIALIZED, running=True, in_recovery=False, lsn=LSN,
                     slots=(("n2", LSN - 100), ("n3", LSN - 200)))


def test_the_primary_publishes_its_slots_and_its_own_position_under_its_own_slot_name() -> None:
    assert published(PRIMARY, "N-1") == (("n2", LSN - 100), ("n3", LSN - 200), ("n_1", LSN))
    assert published(LocalState(slots=(("n2", 5),)), "n1") == (("n2", 5),), "no position: only the slots"


SOURCE = "postgresql://n1:5432/postgres"
CDC = PermanentSlot("cdc", "d", "p")


def with_cdc(cluster: ClusterView) -> ClusterView:
    """The primary publishes its logical slot too (its confirmed_flush_lsn)."""
    return replace(cluster, slot_positions=(*cluster.slot_positions, ("cdc", LSN - 400)))


def without_conn_url(cluster: ClusterView) -> ClusterView:
    return replace(cluster, members=tuple(replace(m, conn_url=None) if m.name == "n1" else m for m in cluster.members))


PHYSICAL = (("n1", LSN), ("n3", LSN - 200), ("perm", LSN - 300))
UNPUBLISHED = ((CDC, None),)  # in the config, not published by the primary (yet): its copy is kept, not made


def nofailover(cluster: ClusterView) -> ClusterView:
    return replace(cluster, members=tuple(replace(m, tags=replace(m.tags, nofailover=True)) if m.name == "n2" else m
                                          for m in cluster.members))


CASES: list[tuple[str, ClusterView, LocalState, FollowSlots | None]] = [
    ("a streaming replica copies every published slot but its own (the leader's included)",
     view(), REPLICA, FollowSlots(PHYSICAL, ("n1", "n3"), 1800, UNPUBLISHED, SOURCE)),
    ("member_slots_ttl: 0 -> only the permanent slots, as in Patroni",
     view(member_slots_ttl=0), REPLICA, FollowSlots((("perm", LSN - 300),), (), 0, UNPUBLISHED, SOURCE)),
    ("a replica that does not stream (yet) keeps them too", view(), LocalState(
        data_dir=DataDir.INITIALIZED, running=True, in_recovery=True, lsn=LSN),
     FollowSlots(PHYSICAL, ("n1", "n3"), 1800, UNPUBLISHED, SOURCE)),
    ("a published logical slot is copied from the leader's server, never made a physical one",
     with_cdc(view()), REPLICA, FollowSlots(PHYSICAL, ("n1", "n3"), 1800, ((CDC, LSN - 400),), SOURCE)),
    ("member_slots_ttl: 0 -> the logical copy all the same (it is permanent)",
     with_cdc(view(member_slots_ttl=0)), REPLICA,
     FollowSlots((("perm", LSN - 300),), (), 0, ((CDC, LSN - 400),), SOURCE)),
    ("a logical slot taken out of the config but still published (its consumer is connected): neither a "
     "logical copy nor a physical slot under its name", with_cdc(view(slots={"perm": {"type": "physical"}})),
     REPLICA, FollowSlots(PHYSICAL, ("n1", "n3"), 1800, (), SOURCE)),
    ("a published name that is neither a member's nor in the config is not copied",
     replace(view(), slot_positions=(*PUBLISHED, ("stray", LSN))), REPLICA,
     FollowSlots(PHYSICAL, ("n1", "n3"), 1800, UNPUBLISHED, SOURCE)),
    ("a nofailover member keeps no logical copies (it never becomes the primary that needs them)",
     nofailover(with_cdc(view())), REPLICA, FollowSlots(PHYSICAL, ("n1", "n3"), 1800, (), SOURCE)),
    ("the leader's member key has no conn_url: physical copies only, no logical source",
     without_conn_url(with_cdc(view())), REPLICA, FollowSlots(PHYSICAL, ("n1", "n3"), 1800)),
    ("use_slots off: none", view(postgresql={"use_slots": False}), REPLICA, None),
    ("paused: raftpg changes nothing", view(pause=True), REPLICA, None),
    ("no leader: nothing to follow", view(leader=None), REPLICA, None),
    ("I hold the key: the primary's slots are EnsureSlots'", view(leader="n2"), REPLICA, None),
    ("not running", view(), LocalState(data_dir=DataDir.INITIALIZED), None),
    ("a primary without the key is not a replica", view(), PRIMARY, None),
]


@pytest.mark.parametrize(("what", "cluster", "local", "expected"), CASES, ids=[c[0] for c in CASES])
def test_which_slot_copies_a_replica_keeps(what: str, cluster: ClusterView, local: LocalState,
                                          expected: FollowSlots | None) -> None:
    assert replica_slots(cluster, local, "n2") == expected


def _follows(memory: Memory, now: float = 100.0, cluster: ClusterView | None = None) -> list[FollowSlots]:
    inputs = Inputs(view=cluster or view(), local=REPLICA, me=Me("n2"), lease=LeaseState(), memory=memory,
                    now=now, now_wall=1.7e9, demote_margin_s=2.0)
    return [a for a in chores(inputs) if isinstance(a, FollowSlots)]


def test_a_replicas_slot_copies_are_a_chore_never_a_decision_and_cost_nothing_while_idle() -> None:
    """Done when the primary publishes other positions, or a minute after the last time; an idle cluster
    (the same positions every cycle) runs no slot queries on its replicas."""
    follow = replica_slots(view(), REPLICA, "n2")
    assert follow is not None and _follows(Memory()) == [follow]
    done = memories.after_chores(Memory(), (follow,), True, 100.0)
    assert _follows(done, now=101.0) == [], "the same positions: nothing to do"
    assert _follows(done, now=160.0) == [follow], "a minute later: checked again"
    moved = view()
    moved = replace(moved, slot_positions=(("n1", LSN + 8), *moved.slot_positions[1:]))
    assert len(_follows(done, now=101.0, cluster=moved)) == 1, "the primary moved on: brought in step"
    assert memories.after_chores(Memory(), (follow,), False, 100.0) == Memory(), "failed chores: not recorded"


def test_a_consumer_confirming_more_brings_the_logical_copies_in_step_at_once() -> None:
    cluster = with_cdc(view())
    follow = replica_slots(cluster, REPLICA, "n2")
    assert follow is not None
    done = memories.after_chores(Memory(), (follow,), True, 100.0)
    assert _follows(done, now=101.0, cluster=cluster) == []
    confirmed = replace(cluster, slot_positions=(*cluster.slot_positions[:-1], ("cdc", LSN)))
    assert [f.logical for f in _follows(done, now=101.0, cluster=confirmed)] == [((CDC, LSN),)]
