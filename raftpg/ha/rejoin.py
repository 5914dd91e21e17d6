"""Replicas that must be brought back onto the leader: a rejoin (pg_rewind, or a fresh clone with the old
data kept aside) and the ladder of repairs for a replica that stopped streaming. Pure, like ``decide``
(which calls these); every step is an action, and nothing is stopped or replaced unless the leader can
be reached from here."""

from __future__ import annotations

from raftpg.ha.actions import (
    Action,
    CheckReachable,
    CloneFrom,
    Decision,
    MoveDataAside,
    RecordRepair,
    Rewind,
    StartReplica,
    StopPostgres,
)
from raftpg.ha.inputs import Inputs
from raftpg.model import ClusterView, Member

RECLONE_AFTER_TTLS = 3


def stalled_for(i: Inputs, view: ClusterView, leader: Member) -> float | None:
    """How long this replica, pointed at a running leader, has not streamed, once that is more than a
    TTL; else None. PostgreSQL keeps such a replica running, stuck: its WAL diverged (a timeline the
    leader never had, the same timeline number reached by two promotions, WAL past the leader's), the
    leader has no slot for it, or its wal receiver broke."""
    stalled_since = i.memory.stalled_since
    if view.paused or not leader.is_running or stalled_since is None:
        return None
    stalled_s = i.now - stalled_since
    return stalled_s if stalled_s > view.config.ttl_s else None


def rejoin(i: Inputs, view: ClusterView, leader: Member, first: tuple[Action, ...], why: str,
           reclone: bool = False) -> Decision:
    """Bring this (stopped, or stopped by ``first``) data dir back as ``leader``'s replica: pg_rewind when
    allowed and not already failed, else a fresh clone with the old data kept aside. Nothing is stopped
    or replaced unless ``leader`` is reachable from here (a cut link is not a reason to throw data away)."""
    conn_url = leader.conn_url or ""
    reach = CheckReachable(leader.name, conn_url)
    start = StartReplica(leader.name, conn_url)
    if view.config.use_pg_rewind and not i.memory.rewind_failed and not reclone:
        return Decision((reach, *first, Rewind(leader.name, conn_url), start),
                        f"{why}rewinding onto {leader.name}, then starting as its replica")
    reason = "re-cloning" if reclone else "rewinding failed or is off (use_pg_rewind)"
    return Decision((reach, *first, MoveDataAside(f"{reason}: cloning afresh from {leader.name}"),
                     CloneFrom(leader.name, conn_url), start),
                    f"{why}cloning afresh from {leader.name} (the old data kept aside)")


def repair(i: Inputs, view: ClusterView, leader: Member, stalled_s: float) -> Decision:
    """The repair ladder: pg_rewind first (it answers "no rewind required" when nothing diverged, and the
    restart re-reads the replication settings); a fresh clone, the old data kept aside, when that did not
    help for RECLONE_AFTER_TTLS TTLs; then nothing more but saying so (an operator must look)."""
    local = i.local
    assert local is not None
    what = (f"not streaming from {leader.name} for {stalled_s:.0f}s (my timeline {local.timeline}, "
            f"its timeline {leader.timeline})")
    stop = (StopPostgres("fast", f"repairing: not streaming from {leader.name}"),)
    if i.memory.stall_repairs == 0:
        decision = rejoin(i, view, leader, stop, f"repairing ({what}): ")
    elif i.memory.stall_repairs == 1 and stalled_s > RECLONE_AFTER_TTLS * view.config.ttl_s:
        decision = rejoin(i, view, leader, stop, f"repairing ({what}) after a rewind: ", reclone=True)
    else:
        return Decision((), f"{what}; {i.memory.stall_repairs} repair(s) tried" +
                        ("; needs an operator" if i.memory.stall_repairs >= 2 else ""))
    return Decision(decision.actions + (RecordRepair(),), decision.reason)
