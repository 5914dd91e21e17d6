"""What the REST API needs of the node: a cheap read-only view and a set of async commands.

Both are owned here (the consumer) and implemented by ``view.LoopNodeView`` / ``commands.NodeCommands``
over the HA loop and the DCS; tests use fakes.

``NodeView`` methods are synchronous and must return in microseconds: they only read values the HA loop
already published (a frozen ``NodeStatus``), except ``postgres_now``, a bounded coroutine that looks at
PostgreSQL itself so health checks describe it as it is now, and ``cluster_now``, a bounded read of the
DCS for ``GET /cluster``; they keep answering while PostgreSQL restarts or the DCS is unreachable.

``Commands`` methods are coroutines. Anything that may block (a DCS round trip, waiting for the loop to
act) runs in a worker thread or awaits; nothing blocks the event loop. A refusal raises
:class:`OperationError` (message + HTTP status); success returns an :class:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from raftpg.config import Config
from raftpg.ha.operations import OperationError
from raftpg.model import ClusterView, LocalState, NodeStatus

__all__ = ["Commands", "NodeView", "OperationError", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """A command's answer: ``message`` for humans, ``http_status`` (200 done, 202 accepted/scheduled),
    ``data`` merged into the JSON response body."""

    message: str
    http_status: int = 200
    data: Mapping[str, Any] = field(default_factory=dict)


class NodeView(Protocol):
    """This node as the HA loop last saw it. Every method is non-blocking and cheap."""

    def status(self) -> NodeStatus:
        """The last completed HA cycle's status (cluster view, local PostgreSQL, decision)."""

    async def cluster_now(self) -> ClusterView | None:
        """The cluster as the DCS holds it now, for ``GET /cluster`` (Patroni reads it afresh there too:
        a replica that began streaming shows at once, not after the next cycle of this node, up to
        loop_wait later). None: no reader, or the store did not answer within about a second; then the
        last cycle's view is used. Bounded; concurrent calls share one read."""

    def config(self) -> Config:
        """The node's current (static) settings; a reload swaps it."""

    def raft_status(self) -> dict[str, Any] | None:
        """``RaftStatus.to_dict()`` of the embedded store, or None with an external DCS."""

    async def postgres_now(self) -> LocalState | None:
        """PostgreSQL's role and streaming state now (at most half a second old), for health checks;
        None on a witness or when no probe is wired (then the last cycle's ``status().local`` is used).
        Bounded: it never waits more than about a second."""

    def monotonic(self) -> float:
        """The clock ``NodeStatus.cycle_monotonic`` was read on (for /liveness)."""

    def wall(self) -> float:
        """Epoch seconds (scheduled restarts, timestamps in responses)."""

    @property
    def version(self) -> str:
        """raftpg's version, shown in status and metrics."""


class Commands(Protocol):
    """Operations on the cluster (through the DCS) and on this node (through the HA loop)."""

    async def switchover(self, leader: str | None, candidate: str | None,
                         scheduled_at: str | None) -> Outcome:
        """Planned switchover; ``scheduled_at`` ISO-8601 with a timezone or None for now."""

    async def failover(self, candidate: str, force: bool) -> Outcome:
        """Manual failover to ``candidate`` when there is no healthy primary (or ``force``)."""

    async def cancel_switchover(self) -> Outcome: ...

    async def remove_cluster(self, leader: str | None) -> Outcome:
        """Delete every key of the cluster, if ``leader`` still holds the leader key (None: nobody)."""

    async def patch_config(self, patch: dict[str, Any]) -> Outcome:
        """Merge-patch the dynamic config (``null`` deletes; ``{"pause": true}`` pauses the cluster);
        ``data['config']`` is the stored result."""

    async def put_config(self, document: dict[str, Any]) -> Outcome:
        """Replace the dynamic config; ``data['config']`` is the stored result."""

    async def restart(self, timeout_s: float | None = None) -> Outcome:
        """Restart this node's PostgreSQL now (conditions were checked by the caller); ``timeout_s``: fail
        (503) if it is not running again within that many seconds."""

    async def failsafe(self, primary: str, primary_is_me: bool) -> str | None:
        """``POST /failsafe`` from ``primary`` (failsafe_mode, the DCS unreachable): None if this node
        accepts it as the primary (and holds back from the leader race for ttl), else why not."""

    async def reload(self) -> Outcome:
        """Reload this node's settings and PostgreSQL's configuration."""

    async def reinitialize(self, force: bool, from_leader: bool = False) -> Outcome:
        """Throw away this replica's data and clone it again (``from_leader``: from the leader, never from a
        ``clonefrom`` member)."""

    async def add_raft_member(self, addr: str) -> Outcome: ...

    async def remove_raft_member(self, addr: str) -> Outcome: ...

    async def transfer_raft_leadership(self, addr: str | None) -> Outcome: ...
