"""A planned switchover, as the primary carries it out. Pure.

The primary stops cleanly (a checkpoint first, so the shutdown checkpoint is quick), which hands every
record to the standbys that stream from it, then gives the leader key to the candidate, which promotes.
"""

from __future__ import annotations

from dataclasses import replace

from raftpg.ha.actions import (
    Checkpoint,
    ClearFailoverKey,
    Decision,
    HandOverLeaderKey,
    RenewLeaderKey,
    StopPostgres,
)
from raftpg.ha.inputs import Inputs
from raftpg.model import ClusterView


def planned_switchover(i: Inputs, view: ClusterView) -> Decision | None:
    """The steps of the switchover (or failover with a healthy primary) requested of me, or of any
    primary, now due; None when there is none."""
    failover, me = view.failover, i.me.name
    if failover is None or failover.leader not in (None, me):
        return None
    if failover.scheduled_at is not None and i.now_wall < failover.scheduled_at:
        return None
    renew = RenewLeaderKey()
    # A planned switchover stops this primary cleanly: its walsenders hand every record to the standbys
    # that stream from it, so what counts is streaming from me now (pg_stat_replication), not the lag
    # between positions published a cycle apart (after a pg_basebackup's segment switch they differ by
    # 16 MB for a cycle, and the switchover was refused).
    local = i.local
    streaming = {r.application_name for r in (local.replication if local else ()) if r.state == "streaming"}
    planned = replace(view, last_lsn=None)
    if failover.candidate:
        candidate = view.member(failover.candidate)
        problem = planned.ineligibility(candidate) if candidate else f"{failover.candidate} is not a member"
        if candidate and candidate.name == me:
            problem = f"{me} is already the primary"
        elif candidate and not problem and candidate.name not in streaming:
            problem = f"{candidate.name} is not streaming from {me}"
    else:
        candidates = [m for m in planned.failover_candidates(exclude=me) if m.name in streaming]
        candidate = candidates[0] if candidates else None
        problem = None if candidate else "no eligible candidate streaming from me"
    if problem or candidate is None:
        return Decision((renew, ClearFailoverKey(failover.revision, f"switchover refused: {problem}")),
                        f"refusing switchover: {problem}")
    return Decision((renew, Checkpoint(), StopPostgres("fast", f"switchover to {candidate.name}"),
                     HandOverLeaderKey(candidate.name), ClearFailoverKey(failover.revision, "done")),
                    f"switchover: handing the primary role to {candidate.name}")
