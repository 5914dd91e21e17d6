"""Synchronous replication: which standbys to name, and in which order to change things. Pure.

Safety rule 5: the sync key lists only standbys that PostgreSQL itself reports as synchronous, because
on failover only those may be promoted. So a standby is *added* to ``synchronous_standby_names`` first
and to the sync key only in a later cycle, once pg_stat_replication shows it as ``sync``; it is
*removed* from the sync key first and from ``synchronous_standby_names`` after. Any prefix of the
returned actions leaves the cluster safe.

Non-strict mode with no available standby: ``synchronous_standby_names = ''`` (asynchronous, reported in
status). Strict mode: ``'*'``, so commits wait rather than be acknowledged by the primary alone.

PostgreSQL calls a standby ``sync`` as soon as it streams, which it does once the primary has *sent*
everything, not once the standby has *flushed* it: a standby that replaces another may still lack commits
the other one acknowledged a moment before. So a standby joins the key only once it has flushed past the
primary's position observed while the current setting was in force (``safe_lsn``, remembered by the loop:
``Memory.standby_names_seen``), as Patroni waits for its replicas to be "ready".

Strict mode never loses its only witnesses. A standby of the key that stops being synchronous may hold
commits nobody else has (every commit waited for it), so it stays in the key, and so eligible, until the
standbys that replace it have provably caught up: each has flushed past ``catchup_lsn``, the primary's
position observed once the old one was seen gone (the loop remembers it). Then it is dropped. Without
this, a standby that stopped streaming was dropped at once and, if the primary then died, nobody was
eligible although that standby held every acknowledged commit.
"""

from __future__ import annotations

from raftpg.ha.actions import Action, SetSynchronousStandbys, WriteSyncKey
from raftpg.model import ClusterView, LocalState, ReplicationRow


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def standby_names_value(names: tuple[str, ...], count: int, strict: bool) -> str:
    if not names:
        return "*" if strict else ""
    return f"FIRST {min(count, len(names))} ({', '.join(quote(n) for n in names)})"


def voting_standbys(view: ClusterView, local: LocalState) -> list[ReplicationRow]:
    """The streaming replication rows of valid data members that may be synchronous (not ``nosync``):
    the candidates for the sync key, in synchronous mode and in quorum commit alike."""
    members = {m.name: m for m in view.members}
    return [
        row for row in local.replication
        if row.state == "streaming" and row.application_name in members
        and members[row.application_name].valid and not members[row.application_name].witness
        and not members[row.application_name].tags.nosync
    ]


def lost_standbys(view: ClusterView, local: LocalState, me: str) -> tuple[str, ...]:
    """Standbys named in my sync key that PostgreSQL no longer reports as synchronous."""
    current_key = view.sync.sync_standby if view.sync and view.sync.leader == me else ()
    confirmed = {r.application_name for r in voting_standbys(view, local) if r.sync_state in ("sync", "quorum")}
    return tuple(n for n in current_key if n not in confirmed)


def plan_sync(view: ClusterView, local: LocalState, me: str,
              catchup_lsn: int | None = None, safe_lsn: int | None = None) -> tuple[tuple[Action, ...], str]:
    """Actions for the primary ``me`` to keep synchronous replication right, and a status sentence.

    ``catchup_lsn``: in strict mode, the primary's position when a standby of the key was first seen
    no longer synchronous (None: none is, or not known yet); see the module docstring. ``safe_lsn``: the
    primary's position observed while the current ``synchronous_standby_names`` was in force (None: not
    known yet); a standby joins the key only once it has flushed past it."""
    config = view.config
    current_key = view.sync.sync_standby if view.sync and view.sync.leader == me else ()
    key_revision = view.sync.revision if view.sync else None
    if not config.synchronous_mode:
        actions: list[Action] = []
        if current_key:
            actions.append(WriteSyncKey((), key_revision))
        if local.synchronous_standby_names:
            actions.append(SetSynchronousStandbys(""))
        return tuple(actions), "asynchronous replication"

    if view.sync and view.sync.leader == me and view.sync.quorum > 0:
        # a key written under quorum commit: its voters one by one hold nothing, so start from a key that
        # names me alone, before any standby is named or confirmed the synchronous-mode way
        return (WriteSyncKey((), key_revision),), "synchronous mode: replacing the quorum commit key"
    streaming = voting_standbys(view, local)
    # Keep the standbys we have: first those in the key, then those PostgreSQL already treats as
    # synchronous, and only then the most advanced. Sorting by position alone would swap standbys
    # whenever another one is a few bytes ahead, emptying the key (no failover candidate) each time.
    streaming.sort(key=lambda r: (r.application_name not in current_key, r.sync_state not in ("sync", "quorum"),
                                  -(r.flush_lsn or 0), r.application_name))
    picked = tuple(sorted(r.application_name for r in streaming[: config.synchronous_node_count]))
    confirmed = {r.application_name for r in streaming if r.sync_state in ("sync", "quorum")}
    flushed = {r.application_name: r.flush_lsn or 0 for r in streaming}
    additions = tuple(sorted(n for n in picked if n in confirmed and (
        n in current_key or (safe_lsn is not None and flushed.get(n, 0) >= safe_lsn))))
    keep = tuple(n for n in current_key if n in picked and n in confirmed)
    held = _held_in_strict_mode(view, local, me, additions, catchup_lsn) if config.synchronous_mode_strict else ()
    keep = tuple(sorted({*keep, *held}))
    additions = tuple(sorted({*additions, *held}))

    actions = []
    desired = standby_names_value(picked, config.synchronous_node_count, config.synchronous_mode_strict)
    if keep != current_key or view.sync is None or view.sync.leader != me:
        # removals first; and before PostgreSQL waits for any standby the key names me as its leader,
        # so that from then on the eligibility rule applies (an absent key restricts no one)
        actions.append(WriteSyncKey(keep, key_revision))          # removals first ...
    if desired != local.synchronous_standby_names:
        actions.append(SetSynchronousStandbys(desired))           # ... then PostgreSQL ...
    elif not actions and additions != current_key:
        actions.append(WriteSyncKey(additions, key_revision))     # ... additions once PostgreSQL confirms
    if not picked:
        state = "synchronous (strict): no standby, commits wait" if config.synchronous_mode_strict else \
            "synchronous mode: no standby available, running asynchronously"
    else:
        state = f"synchronous standbys: {', '.join(additions or keep) or 'pending ' + ', '.join(picked)}"
    if held:
        state += f" (keeping {', '.join(held)} in the sync key until its replacements catch up)"
    return tuple(actions), state


def _held_in_strict_mode(view: ClusterView, local: LocalState, me: str, survivors: tuple[str, ...],
                         catchup_lsn: int | None) -> tuple[str, ...]:
    """The lost standbys that must stay in the key: all of them, unless every surviving synchronous
    standby has flushed past ``catchup_lsn``."""
    lost = lost_standbys(view, local, me)
    if not lost:
        return ()
    flushed = {r.application_name: r.flush_lsn or 0 for r in local.replication}
    caught_up = catchup_lsn is not None and bool(survivors) and \
        all(flushed.get(name, 0) >= catchup_lsn for name in survivors)
    return () if caught_up else lost
