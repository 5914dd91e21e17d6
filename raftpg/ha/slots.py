"""Replication slots, chosen purely (beside ``decide``).

On the primary: a physical slot per other data member and the dynamic config's permanent slots; an
absent member's slot is kept ``member_slots_ttl``. Their positions are published in the status key, with
the primary's own WAL position under its own slot name (Patroni 4's shape).

On a replica: a copy of each published slot, advanced to the published position (never past what the
replica has replayed; PostgreSQL caps it); a permanent logical slot (published: its confirmed_flush_lsn)
is first copied from the primary's data directory (raftpg.pg.logical_slots: PostgreSQL 15 has no
failover slots). Whichever replica is promoted then already holds the WAL its followers, the old primary
and the permanent slots' consumers still need, and a CDC consumer's position, instead of making the
slots afresh at its own position. A slot that is no longer published is dropped (a member's after
``member_slots_ttl``), so a replica never keeps WAL for a slot nobody advances; with ``member_slots_ttl:
0`` replicas copy only the permanent slots, as Patroni does.
"""

from __future__ import annotations

from typing import Any

from raftpg.ha.actions import EnsureSlots, FollowSlots
from raftpg.model import ClusterView, LocalState
from raftpg.model.slots import slot_name_for


def primary_slots(view: ClusterView, me: str) -> EnsureSlots:
    """A slot per other data member and the permanent ones; an absent member's is kept member_slots_ttl."""
    return EnsureSlots(tuple(sorted(m.name for m in view.data_members if m.name != me)),
                       view.config.permanent_slots, view.config.member_slots_ttl_s)


SLOTS_REFRESH_S = 60.0  # the primary's slots and a replica's copies are checked this often, idle or not


def slots_due(wanted: EnsureSlots, local: LocalState, ensured: tuple[Any, float] | None, now: float) -> bool:
    """Whether the primary's steady-state cycle ensures its slots: when it never did as primary, the wanted
    set changed, a wanted slot is missing from the slots raftpg made that this cycle's observation shows
    (dropped by hand: made again at once; a logical slot that could not be made yet, or a slot made by
    hand: tried every cycle, as before), or ``SLOTS_REFRESH_S`` passed. Otherwise it would open a
    connection every cycle to find what it found the cycle before."""
    if ensured is None or ensured[0] != wanted or now - ensured[1] >= SLOTS_REFRESH_S:
        return True
    shown = {name for name, _ in local.slots}
    names = {slot_name_for(m) for m in wanted.members} | {slot.name for slot in wanted.permanent}
    return not names <= shown


def published(local: LocalState, me: str) -> tuple[tuple[str, int], ...]:
    """What the primary publishes: its slots' positions, and its own position under its own slot name (the
    replicas' copy of that slot is the one the old primary uses once it follows a new one)."""
    if local.lsn is None:
        return local.slots
    return tuple(sorted({**dict(local.slots), slot_name_for(me): local.lsn}.items()))


def replica_slots(view: ClusterView, local: LocalState, me: str) -> FollowSlots | None:
    """The published slots this running replica keeps a copy of, or None when it keeps none (slots off,
    paused, no primary to follow, or not a replica)."""
    if not view.config.use_slots or view.paused or view.leader is None or view.leader.name == me \
            or not (local.running and local.is_replica):
        return None
    permanent = {slot.name for slot in view.config.permanent_slots if not slot.logical}
    mine = slot_name_for(me)
    # a member's slot only under a member's name: the primary publishes its logical slots in the same map
    # (one taken out of the config but still active stays published), and those are never physical here
    members = {slot_name_for(m.name) for m in view.members} if view.config.member_slots_ttl_s > 0 else set()
    positions = tuple((name, lsn) for name, lsn in view.slot_positions
                      if name != mine and (name in permanent or name in members))
    # a logical slot is copied once the primary publishes it (it exists there: made, or made by hand and
    # named in the config), from the leader's server; a nofailover member keeps no copies (as in Patroni:
    # it never becomes the primary that would need them)
    leader, me_member = view.leader_member, view.member(me)
    source = leader.conn_url if leader is not None and leader.conn_url else None  # also to drop stale copies
    published = dict(view.slot_positions)
    keeps = source is not None and not (me_member is not None and me_member.tags.nofailover)
    copies = tuple((slot, published.get(slot.name)) for slot in view.config.permanent_slots
                   if slot.logical) if keeps else ()
    return FollowSlots(positions, tuple(name for name, _ in positions if name not in permanent),
                       view.config.member_slots_ttl_s, copies, source)
