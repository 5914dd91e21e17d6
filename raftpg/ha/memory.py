"""What the loop remembers between cycles, as pure functions of what it saw and did.

``observed`` folds one cycle's observations in (before deciding); ``after_actions`` folds in how the
decision's actions went (after executing). ``decide`` reads the result in ``Inputs.memory``.
"""

from __future__ import annotations

from dataclasses import replace

from raftpg.ha import actions as act
from raftpg.ha.inputs import Memory
from raftpg.ha.sync import lost_standbys
from raftpg.model import ClusterView, DataDir, LocalState


def observed(memory: Memory, view: ClusterView | None, local: LocalState | None, me: str,
             following: str | None, now: float) -> Memory:
    held = bool(view and view.leader and view.leader.name == me)
    down = held and local is not None and not local.running and not local.may_accept_writes
    standby = local is not None and (local.is_replica or (local.unobservable and local.standby_signal))
    stalled = bool(view and view.leader and not held and standby and local is not None
                   and not local.streaming and following == view.leader.name)
    lost = bool(held and local is not None and local.is_primary and view is not None
                and lost_standbys(view, local, me))
    # a data dir this flag no longer describes: empty, streaming, or a new copy never started (a failed
    # rewind's flag kept on a fresh copy had it moved aside and cloned again, twice a second, for as long
    # as the loop ran: campaign cell double-failover-s2, 143 copies in 76 s)
    fresh_data = local is None or local.data_dir is not DataDir.INITIALIZED or (local.is_replica and local.streaming) \
        or local.fresh_copy
    primary = held and local is not None and local.is_primary
    return replace(
        memory,
        standby_names_seen=_standby_names(memory.standby_names_seen, local, now) if primary and local else None,
        sync_catchup_lsn=(memory.sync_catchup_lsn or (local.lsn if local else None)) if lost else None,
        pg_down_since=(memory.pg_down_since or now) if down else None,
        leader_since=(memory.leader_since or now) if held else None,
        stalled_since=(memory.stalled_since or now) if stalled else None,
        stall_repairs=memory.stall_repairs if stalled else 0,
        rewind_failed=memory.rewind_failed and not fresh_data,
        following=following,
        slots_ensured=memory.slots_ensured if primary else None,  # a new term as primary checks them at once
    )


# How long a new synchronous_standby_names must have been seen before the primary's position counts as past
# everything acknowledged under the old one. The value is confirmed with SHOW after the reload, but each
# walsender applies it when it handles the signal, a few milliseconds later. The loop cycles again this
# soon while it waits (HaLoop.next_wake_s): a failover is possible again only once the new standbys are
# in the key, and a new primary's standbys join it one such step at a time.
SETTLED_S = 0.2


def _standby_names(seen: tuple[str, float, int | None] | None, local: LocalState,
                   now: float) -> tuple[str, float, int | None]:
    value = local.synchronous_standby_names
    if seen is None or seen[0] != value:
        return value, now, None
    if seen[2] is None and now - seen[1] >= SETTLED_S and local.lsn is not None:
        return value, seen[1], local.lsn
    return seen


def after_chores(memory: Memory, done: tuple[act.Action, ...], ok: bool, now: float) -> Memory:
    """The replica's slot copies are in step with what was published, if the chores that did it ran."""
    follow = next((a for a in done if isinstance(a, act.FollowSlots)), None)
    return replace(memory, slots_followed=(follow.published, now)) if ok and follow is not None else memory


def after_actions(memory: Memory, decision: act.Decision, ok: bool, failed: act.Action | None,
                  following: str | None, now: float | None = None) -> Memory:
    start_failures = memory.start_failures
    if decision.has(act.StartReplica) or decision.has(act.StartPrimary):
        start_failures = 0 if ok else start_failures + (1 if isinstance(failed, (act.StartReplica,
                                                                                  act.StartPrimary)) else 0)
    bootstrap_failed = memory.bootstrap_failed
    if (decision.has(act.Initdb) or decision.has(act.CloneStandbyLeader)) and not ok:
        bootstrap_failed = True
    elif decision.has(act.CancelInitialize) and ok:
        bootstrap_failed = False
    return replace(
        memory,
        start_failures=start_failures,
        stall_repairs=memory.stall_repairs + (1 if ok and decision.has(act.RecordRepair) else 0),
        rewind_failed=memory.rewind_failed or isinstance(failed, act.Rewind),
        bootstrap_failed=bootstrap_failed,
        following=following,
        failed_in_a_row=0 if ok else memory.failed_in_a_row + 1,
        slots_ensured=_slots_ensured(memory, decision, ok, now),
    )


def _slots_ensured(memory: Memory, decision: act.Decision, ok: bool, now: float | None) -> tuple[object, float] | None:
    """The primary's slots as ensured by this decision (all of it went through), else as before; a failed
    decision that held an EnsureSlots forgets, so the next cycle ensures them again."""
    ensured = next((a for a in decision.actions if isinstance(a, act.EnsureSlots)), None)
    if ensured is None:
        return memory.slots_ensured
    return (ensured, now) if ok and now is not None else None
