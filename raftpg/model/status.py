"""``NodeStatus``: what the HA loop publishes after each cycle for the REST API and raftpgctl. A value:
the API reads the latest one without taking part in the loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftpg.model.cluster import ClusterView, Role
from raftpg.model.local import LocalState


def node_role(local: LocalState | None, witness: bool) -> Role:
    """A node's role, the one rule for the status, the member key and the node as a failover candidate:
    a witness; a running primary; a running standby; a stopped node with a cluster's data is a replica
    (Patroni shows it so: role replica, state stopped); with no data, uninitialized."""
    if witness:
        return Role.WITNESS
    if local is not None and local.is_primary:
        return Role.PRIMARY
    if local is not None and (local.is_replica or local.sysid):
        return Role.REPLICA
    return Role.UNINITIALIZED


@dataclass(frozen=True)
class NodeStatus:
    """The last cycle's view of this node and the cluster."""

    name: str
    witness: bool
    view: ClusterView | None = None
    local: LocalState | None = None
    decision: str = "starting"
    cycle_monotonic: float | None = None
    dcs_last_seen_wall: float | None = None
    lease_valid_s: float = 0.0
    demote_margin_s: float = 0.0         # the loop demotes this long before the lease ends (health: not primary)
    error: str | None = None
    cycles: int = 0
    leader_changes: int = 0
    loop_duration_s: float = 0.0
    activity: str | None = None          # "creating replica" while a clone runs in the background
    progress: int | None = None          # its percentage, when the tool reports one
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def holds_leader_key(self) -> bool:
        return bool(self.view and self.view.leader and self.view.leader.name == self.name)

    @property
    def role(self) -> str:
        return node_role(self.local, self.witness)

    @property
    def standby_leader(self) -> bool:
        """The leader of a standby cluster: it holds the key and its PostgreSQL runs in recovery."""
        return bool(self.holds_leader_key and self.view and self.view.config.standby_cluster
                    and self.local and self.local.is_replica)

    @property
    def state(self) -> str:
        if self.witness:
            return "running"
        if self.activity is not None:
            return self.activity
        if self.local is None or not self.local.running:
            return "stopped"
        if self.local.is_replica and self.local.streaming:
            return "streaming"
        return "running"
