"""The loop's chores, chosen purely beside ``decide``: work that keeps the node in step with the cluster
but never gates a safety action. They run before the decision's actions, and their failures are logged,
not fatal: a bad cluster-wide parameter must not stop a primary from renewing its lease."""

from __future__ import annotations

from raftpg.ha.actions import Action, ApplyClusterConfig, ClearDetachedMarker, StoreInitialConfig
from raftpg.ha.inputs import Inputs
from raftpg.ha.slots import SLOTS_REFRESH_S, replica_slots  # a replica's copies: checked this often at least


def chores(i: Inputs) -> tuple[Action, ...]:
    view, local = i.view, i.local
    if view is None:
        return ()
    found: list[Action] = []
    if view.initialize is not None and view.config_revision is None:
        found.append(StoreInitialConfig())  # the cluster runs on bootstrap.dcs until it is stored
    if view.config_revision is not None and local is not None and local.running:
        found.append(ApplyClusterConfig(view.config))
    if view.config_revision is not None and view.config.detached_primary == i.me.name and local is not None:
        # my server was left running unfenced while paused: the mark goes once it is fenced again (adopted,
        # and the lease it runs under renewed) or once nothing runs
        fenced = local.supervised and i.lease.deadline is not None and view.leader is not None \
            and view.leader.name == i.me.name
        if fenced or local.postmaster_pid is None:
            found.append(ClearDetachedMarker(view.config_revision))
    follow = replica_slots(view, local, i.me.name) if local is not None else None
    done = i.memory.slots_followed
    if follow is not None and (done is None or done[0] != follow.published or i.now - done[1] >= SLOTS_REFRESH_S):
        found.append(follow)
    return tuple(found)
