"""One rule for a node's role (raftpg.model.status.node_role): the status (/patroni, metrics, restart
conditions), the member key (/cluster, raftpgctl list) and the node as a failover candidate all use it.
Before, a stopped node with data was "replica" in /patroni, "uninitialized" in its member key and ""
as a candidate."""

from __future__ import annotations

import pytest

from raftpg.clock import FakeClock
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
from raftpg.ha.loop import HaLoop
from raftpg.model import DataDir, LocalState, NodeStatus, Role
from raftpg.model.status import node_role

RUNNING = dict(data_dir=DataDir.INITIALIZED, sysid="7300000000000000001", running=True)
CASES = [
    ("a running primary", LocalState(**RUNNING, in_recovery=False), False, Role.PRIMARY),
    ("a running standby", LocalState(**RUNNING, in_recovery=True), False, Role.REPLICA),
    ("a stopped node with a cluster's data", LocalState(data_dir=DataDir.INITIALIZED, sysid="7300000000000000001"),
     False, Role.REPLICA),
    ("a node without data", LocalState(data_dir=DataDir.EMPTY), False, Role.UNINITIALIZED),
    ("no observation yet", None, False, Role.UNINITIALIZED),
    ("a witness", None, True, Role.WITNESS),
]


@pytest.mark.parametrize(("what", "local", "witness", "role"), CASES, ids=[c[0] for c in CASES])
def test_every_view_of_a_node_gives_it_the_same_role(what: str, local: LocalState | None, witness: bool,
                                                     role: Role) -> None:
    assert node_role(local, witness) == role
    assert NodeStatus("n1", witness, local=local).role == role
    clock = FakeClock()
    loop = HaLoop(dcs=memory_dcs(clock, KeyLayout("/service/", "t")), pg=None, watchdog=None, clock=clock,
                  me=Me("n1", witness=witness), bootstrap_dcs={}, version="test")
    assert loop.member(local).role == role
    inputs = Inputs(view=None, local=local, me=Me("n1", witness=witness), lease=LeaseState(), memory=Memory(),
                    now=0.0, now_wall=0.0)
    assert inputs.me_as_member().role == role
