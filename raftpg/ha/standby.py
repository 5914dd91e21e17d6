"""Standby cluster (``standby_cluster`` in the dynamic config): the whole cluster replicates from a remote
primary. Pure; ``decide`` hands over to these functions while the setting is there.

The holder of the leader key is the *standby leader*: its PostgreSQL stays in recovery, streaming from the
source (``host:port``, with ``primary_slot_name`` there); the other members stream from it, as they would
from a primary. The key works as usual (one holder, a TTL, the healthiest replica takes it when it is
free), but taking it never promotes: the new standby leader points itself at the source. The cluster is
bootstrapped by copying the source (pg_basebackup) rather than by initdb, and registered under the source's
system identifier. Removing the setting (``raftpgctl promote-cluster``) lets the standby leader promote
as any key holder in recovery does; adding it to a running cluster (``demote-cluster``) restarts its
primary as a standby leader of the new source (cleanly stopped first: a primary that wrote past the point
where the source's timeline begins cannot follow it, and then needs a new copy).
"""

from __future__ import annotations

from raftpg.ha.actions import (
    AcquireLeaderKey,
    Action,
    AdoptExistingData,
    CancelInitialize,
    CloneStandbyLeader,
    Decision,
    FollowLeader,
    MoveDataAside,
    RaceInitialize,
    RegisterCluster,
    ReleaseLeaderKey,
    RenewLeaderKey,
    StartReplica,
    StopPostgres,
)
from raftpg.ha.inputs import Inputs
from raftpg.ha.slots import primary_slots
from raftpg.model import ClusterView, DataDir
from raftpg.model.cluster import StandbyCluster


def source(view: ClusterView) -> StandbyCluster:
    assert view.config.standby_cluster is not None
    return view.config.standby_cluster


def _where(sc: StandbyCluster) -> str:
    return f"{sc.host}:{sc.port}"


def start(sc: StandbyCluster) -> StartReplica:
    return StartReplica(StandbyCluster.REMOTE, sc.conn_url, remote=True, remote_slot=sc.primary_slot_name)


def follow(sc: StandbyCluster) -> FollowLeader:
    return FollowLeader(StandbyCluster.REMOTE, sc.conn_url, remote=True, remote_slot=sc.primary_slot_name)


def bootstrap(i: Inputs, view: ClusterView, raced: bool) -> Decision:
    """No cluster registered yet: race for it, copy the source, start streaming from it, register."""
    sc, local = source(view), i.local
    assert local is not None
    if i.me.tags.nofailover:
        return Decision((), "standby cluster: waiting for another node to bootstrap it (nofailover)")
    lease = RenewLeaderKey() if view.leader and view.leader.name == i.me.name else AcquireLeaderKey()
    if local.data_dir == DataDir.INITIALIZED and local.sysid and not local.fresh_copy:
        # existing data (a standby of the source moved under raftpg): registered as it is, then it streams
        actions: list[Action] = [lease, AdoptExistingData(local.sysid)] if raced else \
            [RaceInitialize(), AdoptExistingData(local.sysid), AcquireLeaderKey()]
        if not local.running:
            actions.append(start(sc))
        return Decision(tuple(actions), f"standby cluster: registering the existing data, to stream from "
                                        f"{_where(sc)}")
    if raced and i.memory.bootstrap_failed:
        aside = (MoveDataAside("a copy of the standby cluster's source that failed", immediate=True),) \
            if local.data_dir not in (DataDir.MISSING, DataDir.EMPTY) else ()
        return Decision((*aside, CancelInitialize(), ReleaseLeaderKey()),
                        "standby cluster: my copy of the source failed; giving the bootstrap back")
    copy: tuple[Action, ...] = () if local.fresh_copy else (CloneStandbyLeader(sc.conn_url),)
    steps = (*copy, start(sc), RenewLeaderKey(), RegisterCluster())
    if raced:
        return Decision((lease, *steps), f"standby cluster: bootstrapping it again from {_where(sc)}")
    return Decision((RaceInitialize(), AcquireLeaderKey(), *steps),
                    f"standby cluster: racing to bootstrap it as a copy of {_where(sc)}")


def lead(i: Inputs, view: ClusterView) -> Decision:
    """I hold the key and my PostgreSQL runs in recovery: the standby leader, streaming from the source."""
    sc = source(view)
    actions: list[Action] = [RenewLeaderKey()]
    if i.memory.following != StandbyCluster.REMOTE:
        actions.append(follow(sc))
    if view.config.use_slots and not view.paused:
        actions.append(primary_slots(view, i.me.name))  # the members stream from me through their slots
    return Decision(tuple(actions), f"no action: I am {i.me.name}, the standby leader, replicating from "
                                    f"{_where(sc)}")


def take_over(view: ClusterView, reason: str, acquire: bool) -> Decision:
    """Instead of a promotion: hold the key and stream from the source."""
    sc = source(view)
    return Decision((AcquireLeaderKey() if acquire else RenewLeaderKey(), follow(sc)),
                    f"{reason} (standby cluster: I become the standby leader, replicating from {_where(sc)})")


def restart_leader(view: ClusterView) -> Decision:
    """The standby leader's PostgreSQL is down: start it streaming from the source."""
    sc = source(view)
    return Decision((RenewLeaderKey(), start(sc)), f"standby cluster: starting PostgreSQL as the standby leader, "
                                                   f"replicating from {_where(sc)}")


def demote(view: ClusterView, me: str) -> Decision:
    """A running primary in a cluster that has become a standby cluster (``demote-cluster``): it stops
    cleanly and comes back as the standby leader, keeping the key."""
    sc = source(view)
    return Decision((RenewLeaderKey(), StopPostgres("fast", "the cluster is now a standby cluster"), start(sc)),
                    f"demoting the cluster: {me} becomes the standby leader, replicating from {_where(sc)}")
