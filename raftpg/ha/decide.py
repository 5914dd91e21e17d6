"""The HA decision: (cluster snapshot, local PostgreSQL, this node, lease, memory, now) -> actions.

Pure: no I/O, no clock, no randomness. The loop executes the actions in order and stops at the first
failure; the next cycle decides afresh, so any prefix of a decision must leave the cluster safe.

Safety rules enforced here (DESIGN.md section 3): PostgreSQL is promoted or started as a primary only
in a decision that first acquires or renews the leader key (1); a primary whose lease could expire
before it can renew stops PostgreSQL (2); only the healthiest eligible member races for a free key (4);
a foreign data dir is refused (7); and ``_check_invariants`` fails closed on a malformed decision (8).
"""

from __future__ import annotations

from dataclasses import replace

from raftpg.ha import failsafe, quorum, standby
from raftpg.ha.actions import (
    MEMBER_POLL_S,
    AcquireLeaderKey,
    Action,
    AdoptExistingData,
    CancelInitialize,
    Checkpoint,
    ClearFailoverKey,
    CloneFrom,
    Decision,
    Fence,
    FinishBootstrap,
    FollowLeader,
    Initdb,
    MoveDataAside,
    PostBootstrap,
    Promote,
    PublishPosition,
    RaceInitialize,
    RecordPromotion,
    Refuse,
    RegisterCluster,
    ReleaseLeaderKey,
    ReloadPostgres,
    RenewLeaderKey,
    RestartPostgres,
    SetSynchronousStandbys,
    StartPrimary,
    StartReplica,
    StopPostgres,
    WriteSyncKey,
)
from raftpg.ha.inputs import REINITIALIZE_FROM_LEADER, Inputs
from raftpg.ha.rejoin import rejoin, repair, stalled_for
from raftpg.ha.slots import primary_slots, published, slots_due
from raftpg.ha.switchover import planned_switchover
from raftpg.model import ClusterView, DataDir, Failover, Member, PeerAnswer
from raftpg.model.cluster import health_key


def decide(inputs: Inputs) -> Decision:
    return _check_invariants(_decide(inputs))


def _decide(i: Inputs) -> Decision:
    if i.me.witness:
        return Decision((), f"no action: I am {i.me.name}, a witness (Raft vote only)")
    if i.view is None:
        return _dcs_unreachable(i)
    view, local = i.view, i.local
    assert local is not None
    if local.bootstrap_unfinished:
        return _unfinished_bootstrap(i, view)
    if view.initialize is None:
        return _uninitialized(i)
    if view.initialize == "":
        # The race winner holds the leader key while it bootstraps. With the key free (the winner failed
        # or died before or during initdb), or held by me (my own bootstrap was interrupted), nobody is
        # bootstrapping: take over, with the leader key's compare-and-set as the mutex.
        if view.leader is None or _leader_is(view, i.me.name):
            return _uninitialized(i, raced=True)
        return Decision((), "waiting: another node is bootstrapping the cluster")
    if local.sysid and local.sysid != view.initialize:
        return Decision((Refuse(
            f"data directory has system identifier {local.sysid} but cluster {view.initialize!r} "
            "is registered in the DCS: this node belongs to a different cluster; refusing to join"),),
            "refusing: foreign data directory")
    if local.data_dir in (DataDir.MISSING, DataDir.EMPTY, DataDir.BROKEN):
        return _needs_clone(i, view)
    wanted = REINITIALIZE_FROM_LEADER in i.pending or "reinitialize" in i.pending
    if wanted and not _leader_is(view, i.me.name):
        source = view.clone_source(i.me.name, from_leader=REINITIALIZE_FROM_LEADER in i.pending)
        if source:
            return Decision((MoveDataAside("reinitialize requested"), CloneFrom(source.name, source.conn_url or ""),
                             StartReplica(_leader_name(view), _leader_conn(view))),
                            f"reinitializing from {source.name} as requested")
    if local.may_accept_writes and not local.running:
        return _unobservable_primary(i, view)
    if not local.running:
        return _postgres_stopped(i, view)
    if local.is_primary:
        return _running_primary(i, view)
    return _running_replica(i, view)


# ------------------------------------------------------------------------------------- helpers


def _leader_is(view: ClusterView, name: str) -> bool:
    return view.leader is not None and view.leader.name == name


def _leader_name(view: ClusterView) -> str | None:
    return view.leader.name if view.leader else None


def _leader_conn(view: ClusterView) -> str | None:
    member = view.leader_member
    return member.conn_url if member else None


def _operator_requests(i: Inputs) -> tuple[Action, ...]:
    if "restart" in i.pending:
        return (RestartPostgres("restart requested"),)
    if "reload" in i.pending:
        return (ReloadPostgres(),)
    return ()


# ------------------------------------------------------------------------------------- branches

# A demotion under a lease deadline (the DCS cannot be reached, the server cannot be observed, another
# member holds the key): fast, then immediate after this long. A fast shutdown writes its checkpoint in
# milliseconds and then waits for every connected standby to confirm it; cut off by a partition, that wait
# lasts until TCP retransmits after the heal (9 s in a jepsen-lite run). Killed after its checkpoint, the
# data directory is still cleanly shut down.
DEMOTE_STOP_S = 2.0


def _dcs_unreachable(i: Inputs) -> Decision:
    local = i.local
    if not (local and local.may_accept_writes):
        return Decision((), "DCS unreachable: no action, not the primary")
    remaining = i.lease.valid_for(i.now)
    if remaining > i.demote_margin_s:
        ask = failsafe.ask(i)  # failsafe_mode: the members' word extends the lease instead of a renewal
        if ask is not None and local.is_primary:  # never for a server nobody can observe
            return Decision((ask,), f"DCS unreachable: failsafe_mode: asking {', '.join(n for n, _ in ask.members)} "
                                    f"to keep me the primary (lease valid for {remaining:.1f}s more)")
        return Decision((), f"DCS unreachable: I am the primary, lease valid for {remaining:.1f}s more")
    return Decision((StopPostgres("fast", "cannot renew the leader lease", DEMOTE_STOP_S),),
                    "demoting: DCS unreachable and the leader lease is about to expire")


def _unfinished_bootstrap(i: Inputs, view: ClusterView) -> Decision:
    """initdb ran here but the cluster it made was not registered when the agent last knew (it died, or
    its bootstrap failed, or it lost the race while partitioned). Registered after all: done. Otherwise
    the data is nobody's cluster (roles may be missing; another node's cluster may have won): it is moved
    aside, kept, and this node starts afresh (bootstraps again, or clones from the winner)."""
    local = i.local
    assert local is not None
    if view.initialize and view.initialize == local.sysid:
        return Decision((FinishBootstrap(),), "the bootstrap of this node registered its cluster: finishing it")
    return Decision((MoveDataAside("a bootstrap of this node never registered its cluster", immediate=True),),
                    "moving the data of an unfinished bootstrap aside")


def _unobservable_primary(i: Inputs, view: ClusterView) -> Decision:
    """A postmaster runs that may be a primary, and the agent cannot query it. It keeps its fence and is
    never taken for "not the primary": the lease is not renewed (nobody can vouch for this server), and
    it is stopped before the lease could expire, as a primary that cannot renew would be."""
    me, local = i.me.name, i.local
    assert local is not None
    what = f"PostgreSQL (postmaster {local.postmaster_pid}, {local.postmaster_status}) does not answer"
    if not _leader_is(view, me):
        holder = view.leader.name if view.leader else "nobody"
        return Decision((StopPostgres("fast", f"{what} and {holder} holds the leader key", DEMOTE_STOP_S),),
                        f"demoting: {what}, and {holder} holds the leader key")
    if view.paused:
        return Decision((RenewLeaderKey(),), f"paused: {what}; I take no automatic action")
    remaining = i.lease.valid_for(i.now)
    if remaining > i.demote_margin_s:
        return Decision((), f"not renewing the leader key: {what}; demoting in "
                            f"{remaining - i.demote_margin_s:.1f}s unless it answers")
    # Stopped (fast: the replicas receive the shutdown checkpoint), then the key goes to a replica that can
    # be observed, rather than restarting in place a server that may stay unobservable.
    stop = StopPostgres("fast", f"{what} and the leader lease is about to expire", DEMOTE_STOP_S)
    return Decision((stop, ReleaseLeaderKey()), f"demoting: {what} and the leader lease is about to expire")


STANDBY_STATES = ("in archive recovery", "shut down in recovery")


def _uninitialized(i: Inputs, raced: bool = False) -> Decision:
    """No cluster yet. ``raced``: the initialize key was created but its bootstrap abandoned."""
    local = i.local
    assert local is not None and i.view is not None
    if i.view.config.standby_cluster:
        return standby.bootstrap(i, i.view, raced)
    lease = RenewLeaderKey() if _leader_is(i.view, i.me.name) else AcquireLeaderKey()
    if local.data_dir == DataDir.INITIALIZED and local.sysid:
        # Existing data (a migration from Patroni, a DCS that lost its keys): only a former primary's
        # data is registered. A standby's would be promoted by the winner, maybe behind the primary's.
        if i.me.tags.nofailover:
            return Decision((), "no cluster registered: waiting for another node to register it (nofailover)")
        if local.standby_signal or local.is_replica or local.cluster_state in STANDBY_STATES:
            return Decision((), "no cluster registered: waiting for the former primary to register it "
                                "(my data is a standby's)")
        actions: list[Action] = [lease, AdoptExistingData(local.sysid)] if raced else \
            [RaceInitialize(), AdoptExistingData(local.sysid), AcquireLeaderKey()]
        if not local.running:
            actions.append(StartPrimary())
        return Decision(tuple(actions), "no cluster registered: racing to register the existing data")
    if i.me.tags.nofailover:
        return Decision((), "waiting for another node to bootstrap (nofailover)")
    if local.data_dir == DataDir.BROKEN:
        return Decision((), "waiting for another node to bootstrap (my data dir is unusable)")
    if raced and i.memory.bootstrap_failed:
        return Decision((CancelInitialize(), ReleaseLeaderKey()),
                        "my bootstrap failed: giving it back so that any node may try again")
    if raced:
        return Decision((lease, *BOOTSTRAP), "the cluster's bootstrap was abandoned: bootstrapping it")
    return Decision((RaceInitialize(), AcquireLeaderKey(), *BOOTSTRAP), "no cluster yet: racing to bootstrap it")


# initdb (the lease renewed meanwhile), start as a primary under the fence, roles and the user's script,
# then register the system identifier with a fresh lease; a failure leaves the bootstrap-in-progress
# marker, so the next decision moves the data aside (``_unfinished_bootstrap``) and gives the race back
BOOTSTRAP = (Initdb(), StartPrimary(), PostBootstrap(), RenewLeaderKey(), RegisterCluster(), FinishBootstrap())


def _needs_clone(i: Inputs, view: ClusterView) -> Decision:
    source = view.clone_source(i.me.name)
    if source is None and not i.me.clone_without_leader:
        return _waiting("waiting for a running primary to clone from")
    if source is None:  # Patroni's no_leader replica methods: a restore from backup needs no primary
        clone: tuple[Action, ...] = (CloneFrom("", ""), StartReplica(None, None))
        what = "with a no_leader replica method (no running primary)"
    else:
        clone = (CloneFrom(source.name, source.conn_url or ""), StartReplica(_leader_name(view), _leader_conn(view)))
        what = f"from {source.name}"
    if i.local and i.local.data_dir == DataDir.BROKEN:
        return Decision((MoveDataAside("the data directory is unusable"), *clone),
                        f"moving an unusable data directory aside and creating a replica {what}")
    return Decision(clone, f"creating a replica {what}")


START_FAILURES_BEFORE_REWIND = 3


def _postgres_stopped(i: Inputs, view: ClusterView) -> Decision:
    me = i.me.name
    if view.paused:
        return Decision((), "paused: PostgreSQL is not running and I take no automatic action")
    if _leader_is(view, me):
        down_for = 0.0 if i.memory.pg_down_since is None else i.now - i.memory.pg_down_since
        if down_for > view.config.primary_start_timeout_s:
            return Decision((ReleaseLeaderKey(),),
                            f"giving up the leader key: PostgreSQL down {down_for:.0f}s "
                            f"> primary_start_timeout {view.config.primary_start_timeout_s}s")
        if view.config.standby_cluster:
            return standby.restart_leader(view)
        if i.data_was_primary:
            return Decision((RenewLeaderKey(), StartPrimary()), "restarting the crashed primary in place")
        return Decision((RenewLeaderKey(), StartReplica(None, None)),
                        "starting PostgreSQL to promote it: I hold the leader key")
    leader = view.leader_member
    if view.leader and leader and leader.conn_url and i.local and i.local.unobservable and i.local.standby_signal:
        # a standby still starting (not yet consistent: it refuses connections until it has the WAL it
        # needs) that does not get there: the same repair ladder as a replica that does not stream
        stalled_s = stalled_for(i, view, leader) if i.memory.following == leader.name else None
        if stalled_s is not None:
            return repair(i, view, leader, stalled_s)
    if view.leader and leader and leader.conn_url:
        # a data dir that was a primary, or that PostgreSQL keeps refusing to start as a replica of this
        # leader (e.g. "requested timeline does not contain minimum recovery point"), is rewound, or
        # re-cloned with the old one kept aside when rewinding is impossible
        rewind = i.data_was_primary or i.memory.start_failures >= START_FAILURES_BEFORE_REWIND \
            or (i.memory.rewind_failed and not (i.local and i.local.fresh_copy))
        if not rewind:
            return Decision((StartReplica(leader.name, leader.conn_url),), f"starting as a replica of {leader.name}")
        if leader.role != "primary":
            # pg_rewind from a standby that is being promoted copies a half-promoted state
            return _waiting(f"waiting for {leader.name} to run as primary before rewinding to it")
        return rejoin(i, view, leader, (), "")
    return Decision((StartReplica(None, None),), "starting PostgreSQL read-only: no primary known")


def _running_primary(i: Inputs, view: ClusterView) -> Decision:
    me, local = i.me.name, i.local
    assert local is not None
    if view.leader is None:
        return Decision((AcquireLeaderKey(),), "the leader key is free and I am the running primary: taking it")
    if view.leader.name != me:
        return Decision((StopPostgres("fast", f"{view.leader.name} holds the leader key", DEMOTE_STOP_S),),
                        f"demoting: {view.leader.name} holds the leader key")
    if view.config.standby_cluster and not view.paused:
        return standby.demote(view, me)
    actions: list[Action] = [RenewLeaderKey()]
    switchover = planned_switchover(i, view)  # an operator's explicit request, honoured in pause too
    if switchover is not None:
        return switchover
    if view.paused:
        return Decision(tuple(actions) + _operator_requests(i), f"paused: I am {me}, the primary with the lock")
    if local.lsn is not None:
        topology = failsafe.topology(view, i.me)
        actions.append(PublishPosition(local.lsn, published(local, me),
                                       tuple(sorted(topology.items())) if topology is not None else None))
    if view.config.use_slots:
        wanted = primary_slots(view, me)
        if slots_due(wanted, local, i.memory.slots_ensured, i.now):
            actions.append(wanted)
    sync_actions, sync_state = quorum.plan_replication(view, local, me, i.memory)
    actions.extend(sync_actions)
    actions.extend(_operator_requests(i))
    if view.failover and view.failover.leader not in (None, me):
        actions.append(ClearFailoverKey(view.failover.revision, "requested leader is not the primary"))
    return Decision(tuple(actions), f"no action: I am {me}, the primary with the lock ({sync_state})")


def _running_replica(i: Inputs, view: ClusterView) -> Decision:
    me, local = i.me.name, i.local
    assert local is not None
    if _leader_is(view, me):
        if view.config.standby_cluster:
            return standby.lead(i, view)
        if view.last_lsn and (local.lsn or 0) < view.last_lsn and local.streaming and \
                i.memory.leader_since is not None and i.now - i.memory.leader_since < view.config.retry_timeout_s:
            return Decision((RenewLeaderKey(),), "I hold the leader key: waiting to replay the old primary's last WAL")
        return _promote(i, view, "promoted: the leader key was handed to me")
    if view.leader is not None:
        leader = view.leader_member
        if leader is None or not leader.conn_url:
            return _waiting(f"following {view.leader.name}, whose member key is missing")
        if i.memory.following != leader.name:
            return Decision((FollowLeader(leader.name, leader.conn_url),) + _operator_requests(i),
                            f"following the new primary {leader.name}")
        stalled_s = stalled_for(i, view, leader)
        if stalled_s is not None:
            return repair(i, view, leader, stalled_s)
        return Decision(_operator_requests(i), f"no action: I am {me}, a replica of {leader.name}")
    return _failover_race(i, view)


def _waiting(reason: str) -> Decision:
    """Nothing to do until another member's key changes (see ``Decision.poll_s``)."""
    return Decision((), reason, poll_s=MEMBER_POLL_S)


def _failover_race(i: Inputs, view: ClusterView) -> Decision:
    me = i.me.name
    failover = view.failover
    detached = view.config.detached_primary
    if detached and detached != me:
        return Decision((), f"not promoting: {detached}'s PostgreSQL was left running without its agent "
                            f"while paused (detached_primary); start its agent (it adopts the server), or "
                            f"stop that server and remove detached_primary with edit-config")
    if view.paused and not (failover and failover.candidate == me):
        return Decision((), "paused: the leader key is free but I do not promote automatically")
    hold = failsafe.race_hold(i, view)
    if hold:
        return Decision((), f"not promoting: {hold}")
    running = next((a.name for a in i.peers or () if a.error is None and a.in_recovery is False), None)
    if running:
        return _waiting(f"not promoting: {running} answers that its PostgreSQL runs as a primary")
    mine = i.me_as_member()
    eligibility = as_answered(view.eligibility_view(), i.peers)
    if failover and failover.candidate and failover.candidate != me and \
            _may_take_over(eligibility, eligibility.member(failover.candidate), failover):
        return _waiting(f"waiting: manual failover to {failover.candidate}")
    named = bool(failover and failover.candidate == me)
    reason = eligibility.ineligibility(mine)
    if reason and not (named and _may_take_over(eligibility, mine, failover)):
        return _waiting(f"not promoting: {reason}")
    healthier = [m for m in eligibility.failover_candidates(exclude=me) if health_key(m) < health_key(mine)]
    if healthier and not named:
        return _waiting(f"not promoting: {healthier[0].name} is healthier")
    # quorum commit's votes, for a named candidate too (only the lag is ever waived)
    problem = quorum.race_problem(view, me, mine.lsn, i.peers, mine.timeline)
    if problem:
        return _waiting(f"not promoting: {problem}")
    return _promote(i, view, "failover: the leader key was free and I am the healthiest replica",
                    acquire=True)


def as_answered(view: ClusterView, answers: tuple[PeerAnswer, ...] | None) -> ClusterView:
    """The members with the WAL positions (and timelines) they answered just now, in place of the ones
    their keys published. A replica publishes its key once a cycle, so at loop_wait 10 the race could
    rank a member by a position up to 10 s old, from before the old primary's last WAL reached it, and
    a replica behind it could win and lose what it had (Patroni too asks every member at this point).
    The answers are asked after the read that found the key free (``HaLoop._ask_positions``); a member
    that did not answer keeps its key's position."""
    fresh = {a.name: a for a in answers or () if a.error is None and a.in_recovery and a.lsn is not None}
    if not fresh:
        return view
    return replace(view, members=tuple(
        replace(m, lsn=fresh[m.name].lsn, timeline=fresh[m.name].timeline or m.timeline) if m.name in fresh else m
        for m in view.members))


def _may_take_over(view: ClusterView, member: Member | None, failover: Failover | None) -> bool:
    """Whether the candidate named by ``failover`` may promote itself while the leader key is free.

    It must be eligible, except that a manual *failover* (no leader named) may pick a lagging candidate:
    the operator accepted losing the WAL it lacks. Only the lag is waived, never the other rules (sync
    key, nofailover, running); and a switchover request never waives it. The others wait for a candidate
    that may take over, and only for one: waiting for one that may not would leave the cluster without a
    primary for as long as the request stays.
    """
    if member is None or failover is None:
        return False
    if view.ineligibility(member) is None:
        return True
    return failover.leader is None and replace(view, last_lsn=None).ineligibility(member) is None


def _promote(i: Inputs, view: ClusterView, reason: str, acquire: bool = False) -> Decision:
    if view.config.standby_cluster:
        return standby.take_over(view, reason, acquire)
    actions: list[Action] = [AcquireLeaderKey() if acquire else RenewLeaderKey()]
    if view.config.synchronous_mode:
        # Name myself the sync key's leader, with no standby yet, *before* promoting (compare-and-set on
        # the revision read: a concurrent change stops the sequence). From here the old primary and the
        # old key's standbys are no longer eligible, whatever I acknowledge next (Patroni does the same).
        actions.append(WriteSyncKey((), view.sync.revision if view.sync else None))
        actions.append(SetSynchronousStandbys("*"))  # no write is acknowledged unsynchronised meanwhile
    actions.append(Promote())
    if view.config.use_slots:  # the replicas that will follow need their slots before they reconnect
        actions.append(primary_slots(view, i.me.name))
    actions.append(RecordPromotion(reason))
    if view.failover:
        actions.append(ClearFailoverKey(view.failover.revision, "done"))
    return Decision(tuple(actions), reason)


# ------------------------------------------------------------------------------------- invariants


def _check_invariants(decision: Decision) -> Decision:
    """Fail closed (safety rule 8): a decision that would promote without the lease, or promote and
    follow at once, is replaced by releasing the lease and fencing PostgreSQL."""
    seen_lease = False
    for action in decision.actions:
        if isinstance(action, (AcquireLeaderKey, RenewLeaderKey)):
            seen_lease = True
        if isinstance(action, (Promote, StartPrimary, RegisterCluster)) and not seen_lease:
            return _fail_closed(decision, "promotion without the leader lease")
    if decision.has(Promote) and (decision.has(FollowLeader) or decision.has(StartReplica)):
        return _fail_closed(decision, "promote together with follow")
    return decision


def _fail_closed(decision: Decision, problem: str) -> Decision:
    return replace(decision, actions=(ReleaseLeaderKey(), Fence(f"invariant violated: {problem}")),
                   reason=f"invariant violated ({problem}) in: {decision.reason}")


__all__ = ["decide", "Checkpoint", "SetSynchronousStandbys"]
