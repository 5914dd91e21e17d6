"""Standby cluster (raftpg.ha.standby): the decisions by table, and, over every input the decide property
tests draw, the rule that matters most: while ``standby_cluster`` is set, no decision promotes PostgreSQL
or starts it as a primary (the cluster's source is elsewhere; a second primary would fork it)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from test_decide import LSN, ME, NOW, SYSID, WALL, all_inputs, member, replica, running_primary, stopped, url

from raftpg.ha.actions import (
    AcquireLeaderKey,
    CancelInitialize,
    CloneStandbyLeader,
    FollowLeader,
    Promote,
    RaceInitialize,
    RegisterCluster,
    ReleaseLeaderKey,
    RenewLeaderKey,
    StartPrimary,
    StartReplica,
    StopPostgres,
)
from raftpg.ha.decide import decide
from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
from raftpg.model import ClusterView, DataDir, DynamicConfig, Leader, LocalState, SyncState
from raftpg.model.cluster import StandbyCluster

SOURCE = {"host": "10.9.0.1", "port": 5433, "primary_slot_name": "dr"}
REMOTE = "postgresql://10.9.0.1:5433/postgres"
START = StartReplica(StandbyCluster.REMOTE, REMOTE, remote=True, remote_slot="dr")
FOLLOW = FollowLeader(StandbyCluster.REMOTE, REMOTE, remote=True, remote_slot="dr")


def standby_view(leader: str | None = ME, **extra: object) -> ClusterView:
    config = DynamicConfig.from_dict({"standby_cluster": SOURCE, "postgresql": {"use_slots": False}})
    values = dict(initialize=SYSID, config=config, leader=Leader(leader, 5) if leader else None,
                  members=(member(ME), member("n3")), last_lsn=None, revision=10)
    return ClusterView(**{**values, **extra})  # type: ignore[arg-type]


def run(view: ClusterView, local: LocalState, following: str | None = None, **memory: object) -> Inputs:
    return Inputs(view=view, local=local, me=Me(ME, conn_url=url(ME)), lease=LeaseState(NOW + 20),
                  memory=Memory(following=following, **memory), now=NOW, now_wall=WALL)  # type: ignore[arg-type]


def test_bootstrap_copies_the_source_streams_from_it_and_registers() -> None:
    decision = decide(run(standby_view(leader=None, initialize=None), LocalState(data_dir=DataDir.EMPTY)))
    assert decision.actions == (RaceInitialize(), AcquireLeaderKey(), CloneStandbyLeader(REMOTE), START,
                                RenewLeaderKey(), RegisterCluster()), decision.reason


def test_a_failed_copy_gives_the_bootstrap_back() -> None:
    decision = decide(run(standby_view(initialize=""), LocalState(data_dir=DataDir.EMPTY), bootstrap_failed=True))
    assert decision.actions == (CancelInitialize(), ReleaseLeaderKey()), decision.reason


def test_the_standby_leader_streams_from_the_source_and_never_promotes() -> None:
    decision = decide(run(standby_view(), replica(streaming=False), following="n1"))
    assert decision.actions == (RenewLeaderKey(), FOLLOW), decision.reason
    steady = decide(run(standby_view(), replica(), following=StandbyCluster.REMOTE))
    assert steady.actions == (RenewLeaderKey(),) and "the standby leader" in steady.reason


def test_a_replica_that_wins_the_race_becomes_the_standby_leader() -> None:
    decision = decide(run(standby_view(leader=None), replica(streaming=False), following="n1"))
    assert decision.actions == (AcquireLeaderKey(), FOLLOW), decision.reason


def test_the_standby_leader_restarts_streaming_from_the_source() -> None:
    decision = decide(run(standby_view(), stopped(cluster_state="shut down in recovery"), pg_down_since=NOW - 1))
    assert decision.actions == (RenewLeaderKey(), START), decision.reason
    crashed_primary = decide(run(standby_view(), stopped(), pg_down_since=NOW - 1))  # demote-cluster, interrupted
    assert crashed_primary.actions == (RenewLeaderKey(), START)


def test_demote_cluster_restarts_the_primary_as_the_standby_leader() -> None:
    decision = decide(run(standby_view(), running_primary(lsn=LSN)))
    assert decision.actions == (RenewLeaderKey(), StopPostgres("fast", "the cluster is now a standby cluster"),
                                START), decision.reason


def test_promote_cluster_promotes_the_standby_leader() -> None:
    view = replace(standby_view(), config=DynamicConfig.from_dict({"postgresql": {"use_slots": False}}))
    decision = decide(run(view, replica(), following=StandbyCluster.REMOTE))
    assert decision.has(Promote) and decision.has(RenewLeaderKey), decision.reason


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(all_inputs())
def test_no_decision_in_a_standby_cluster_promotes(i: Inputs) -> None:
    if i.view is None:
        return
    sc = DynamicConfig.from_dict({"standby_cluster": SOURCE}).standby_cluster
    view = replace(i.view, config=replace(i.view.config, standby_cluster=sc))
    decision = decide(replace(i, view=view))
    assert not decision.has(Promote) and not decision.has(StartPrimary), decision


def test_synchronous_mode_does_not_stop_a_standby_clusters_failover() -> None:
    """Its commits are the source's: the sync key restricts no one there (else with synchronous_mode set
    nobody could take over from a dead standby leader)."""
    config = DynamicConfig.from_dict({"standby_cluster": SOURCE, "synchronous_mode": True,
                                      "postgresql": {"use_slots": False}})
    view = standby_view(leader=None, config=config, sync=SyncState("n1", (), 3))  # a key left by the old leader
    decision = decide(run(view, replica(streaming=False), following="n1"))
    assert decision.actions == (AcquireLeaderKey(), FOLLOW), decision.reason
