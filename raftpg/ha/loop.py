"""The HA loop: observe -> decide -> execute -> publish -> wait, on its own thread.

Each cycle reads the cluster linearizably, observes PostgreSQL, calls the pure ``decide``, executes the
actions, publishes this member's key, keeps the fencing supervisor's lease current and logs one line
saying what it decided and why. It waits ``loop_wait`` or until something under the scope changes
(a watch), or until an operator request arrives, whichever comes first; after a failed action it goes
again soon, backing off to ``loop_wait`` while the action keeps failing. The wait never runs past the
moment the lease must be renewed or given up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from raftpg.clock import Clock
from raftpg.dcs.base import Dcs, DcsError
from raftpg.ha import failsafe
from raftpg.ha import memory as memories
from raftpg.ha.actions import (
    REPLICA_STARTED_POLL_S,
    Action,
    AskFailsafe,
    Decision,
    FollowLeader,
    Initdb,
    Promote,
    PublishPosition,
    RenewLeaderKey,
    SetSynchronousStandbys,
    StartPrimary,
    StartReplica,
)
from raftpg.ha.background import CloneJob
from raftpg.ha.chores import chores
from raftpg.ha.decide import decide
from raftpg.ha.execute import Executor, FatalRefusal, Timing
from raftpg.ha.inputs import FailsafeSeen, Inputs, Me, Memory
from raftpg.ha.memory import SETTLED_S
from raftpg.ha.ports import FailsafePeers, PositionPeers, PostgresPort, WatchdogPort
from raftpg.model import ClusterView, DynamicConfig, Leader, LocalState, Member, NodeStatus, PeerAnswer
from raftpg.model.status import node_role

__all__ = ["HaLoop", "NodeStatus"]

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2  # the first retry after a failed action; doubled per further failure, up to loop_wait


class HaLoop:
    def __init__(self, *, dcs: Dcs, pg: PostgresPort | None, watchdog: WatchdogPort | None, clock: Clock,
                 me: Me, bootstrap_dcs: dict[str, Any], version: str,
                 on_status: Callable[[NodeStatus], None] | None = None,
                 watchdog_safety_margin_s: float = 5.0,
                 raft_status: Callable[[], dict[str, Any] | None] | None = None,
                 clone_in_background: bool = False, failsafe_peers: FailsafePeers | None = None,
                 position_peers: PositionPeers | None = None) -> None:
        me = replace(me, failsafe_refusal=dcs.failsafe_refusal)
        self.dcs, self.pg, self.clock, self.me = dcs, pg, clock, me
        self.bootstrap_dcs = bootstrap_dcs
        self.version = version
        self._raft_status = raft_status or (lambda: None)  # the embedded store's, shown in status
        self.executor = Executor(dcs, pg, watchdog, clock, me, bootstrap_dcs,
                                 clone_in_background=clone_in_background, wake=self.wake,
                                 failsafe_peers=failsafe_peers)
        self.memory = Memory()
        self.position_peers = position_peers  # asked by a failover candidate (_ask_positions)
        self.watchdog_safety_margin_s = watchdog_safety_margin_s  # local config: watchdog.safety_margin
        self.timing = self._timing(DynamicConfig.from_dict(bootstrap_dcs))
        self._on_status = on_status or (lambda status: None)
        self.status = NodeStatus(me.name, me.witness)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._last_leader: str | None = None
        self.fatal: str | None = None
        # failsafe_mode: the requests heard (POST /failsafe), and whether it is on as last read
        self._failsafe_seen = FailsafeSeen(agent_started=clock.monotonic())
        self._failsafe_on = False
        self._failsafe_kept_at: float | None = None  # when the members last kept this primary
        self._cycle_view: ClusterView | None = None
        self._revision_seen: int | None = None  # the revision of the last view this node had
        self.executor.on_promoted = self._promoted

    def _timing(self, config: DynamicConfig) -> Timing:
        return Timing(ttl_s=config.ttl_s, loop_wait_s=config.loop_wait_s,
                      retry_timeout_s=config.retry_timeout_s,
                      watchdog_safety_margin_s=self.watchdog_safety_margin_s)

    # ------------------------------------------------------------------ requests from the API
    def request(self, what: str) -> None:
        """Queue an operator request for this node (restart, reload, reinitialize) and wake the loop."""
        with self._pending_lock:
            self._pending.add(what)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def failsafe_request(self, primary: str, primary_is_me: bool) -> str | None:
        """``POST /failsafe`` from ``primary``, which cannot reach the DCS: None if accepted (then this
        node does not race for the leader key for ttl: raftpg.ha.failsafe), else why not. Refused when
        failsafe_mode is off as last read, and by a running primary (``primary_is_me``: Patroni's answer
        "Running as a leader")."""
        if not self._failsafe_on:
            return failsafe.NOT_ENABLED
        if primary_is_me:
            return failsafe.RUNNING_AS_LEADER
        with self._pending_lock:
            self._failsafe_seen = replace(self._failsafe_seen, asked_by=primary, asked_at=self.clock.monotonic())
        return None

    def failsafe_active(self) -> bool:
        """Patroni's ``failsafe_mode_is_active``: a primary the members kept within ttl, or a member asked
        within ttl."""
        now, ttl = self.clock.monotonic(), self.timing.ttl_s
        asked = self._failsafe_seen.asked_at
        return any(t is not None and now - t < ttl for t in (asked, self._failsafe_kept_at))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ one cycle
    def _budget(self, cap_s: float) -> float:
        """A DCS call's deadline: at most ``cap_s``, and never past the moment this node must demote, less
        the time a failsafe round needs once a topology is remembered (failsafe.reserve_s): a DCS that
        stopped answering must not use up the time for asking the members (found on a real etcd: a read,
        then a member-key write, timed out at the margin and the primary demoted without asking anyone)."""
        reserve_s = failsafe.reserve_s(self.memory.failsafe_members)
        return self.executor.lease.budget(cap_s, self.clock.monotonic() + reserve_s, self.timing.demote_margin_s)

    def _read(self) -> ClusterView | None:
        # failsafe_mode: a read of an unreachable DCS must not use up the time the members' answers need
        # before the demotion point (found on a real etcd: the read timed out at the margin, so the primary
        # demoted without asking anyone)
        budget = self._budget(self.timing.retry_timeout_s)
        try:
            view = self.dcs.load(linearizable=True, timeout_s=budget, member=self.me.name)
        except DcsError as exc:
            log.warning("cannot read the DCS: %s", exc)
            return None
        if view.config_revision is not None:
            return view
        # Until the cluster's config key exists (a chore stores it once the cluster is registered), the
        # cluster runs on this node's bootstrap.dcs, never on the built-in defaults: a bootstrap decided
        # with ttl 30 / loop_wait 10 left a new primary at a short profile silent for ten seconds, its
        # replicas without slots and its lease three times too long.
        return replace(view, config=DynamicConfig.from_dict(self.bootstrap_dcs))

    def cycle(self) -> Decision:
        started = self.clock.monotonic()
        job = self.executor.clone_job
        if job is not None and not job.finished:
            return self._cloning(job, started)
        self.executor.take_clone_job()  # a copy just ended (a failure was logged): decide afresh
        view = self._read()
        if view is not None:
            self.timing = self._timing(view.config)
        if self.pg:
            self.pg.adopt_unsupervised()  # a server an agent stopped while paused left running: fenced again
        local = self.pg.observe() if self.pg else None
        now = self.clock.monotonic()
        if self.executor.lease.deadline is not None and now >= self.executor.lease.deadline:
            self.executor.drop_lease()
        self.memory = memories.observed(self.memory, view, local, self.me.name, self.executor.following, now)
        self.memory = replace(self.memory, failsafe_members=failsafe.remembered(view, self.me,
                                                                                self.memory.failsafe_members))
        if view is not None:
            self._failsafe_on = failsafe.enabled(view, self.me)
        with self._pending_lock:
            pending, self._pending = frozenset(self._pending), set()
            seen = self._failsafe_seen
        inputs = Inputs(view=view, local=local, me=self.me, lease=self.executor.lease, memory=self.memory,
                        now=now, now_wall=self.clock.wall(), demote_margin_s=self.timing.demote_margin_s,
                        pending=pending, failsafe=seen, peers=self._ask_positions(view, local))
        chores_due = chores(inputs)
        chores_ok = not chores_due or self.executor.run(Decision(chores_due, "chores"), inputs, self.timing)
        if not chores_ok:
            log.error("%s", self.executor.last_error)  # never gates the decision below
        self.memory = memories.after_chores(self.memory, chores_due, chores_ok, now)
        decision = decide(inputs)
        log.info("%s", decision.reason)
        self._cycle_view = view
        ok = self.executor.run(decision, inputs, self.timing) if decision.actions else True
        if ok and decision.has(AskFailsafe):
            self._failsafe_kept_at = now
        self.memory = memories.after_actions(self.memory, decision, ok, self.executor.failed if not ok else None,
                                             self.executor.following, now)
        if decision.actions and self.pg:
            local = self.pg.observe()
        self._after(view, local, ok, decision, started)
        return decision

    def _ask_positions(self, view: ClusterView | None, local: LocalState | None) -> tuple[PeerAnswer, ...] | None:
        """A replica that found the leader key free asks every other data member (GET /patroni, at once,
        within a second) whether its PostgreSQL runs as a primary and how far its WAL goes: the race ranks
        the members by these answers rather than by their keys, which can be loop_wait old
        (decide.as_answered), and under quorum commit they are the votes (raftpg.ha.quorum.vote_problem).
        Asked after the read that found the key free, so after the old primary's lease ended: nothing it
        acknowledged is newer than the answers. Not in a standby cluster: its standby leader's WAL comes
        from outside and may still be flowing, so every replica could find another ahead of what it saw
        of itself a moment before; nor on a member that may never be promoted."""
        if self.position_peers is None or view is None or local is None or not local.is_replica \
                or view.leader is not None or view.paused or view.config.standby_cluster \
                or self.me.tags.nofailover:
            return None
        members = tuple((m.name, m.api_url) for m in view.members
                        if m.name != self.me.name and m.api_url and not m.witness)
        return self.position_peers.positions(members, min(1.0, float(self.timing.retry_timeout_s)))

    def _after(self, view: ClusterView | None, local: LocalState | None, ok: bool, decision: Decision,
               started: float) -> None:
        if self.pg and local is not None:
            if local.may_accept_writes:
                # a primary, or a server that may be one: its fence stays; re-sending the absolute
                # deadline never extends it (only a confirmed renewal does, in the executor)
                self.executor.push_fence(self.timing)
            else:
                self.executor.drop_lease()
                self.pg.unlimited()
                self.executor.disarm_watchdog()  # nothing left to fence: whatever stopped it, stop the countdown
        self._publish_member(local, dcs_down=view is None)
        if view is not None and not all(_leaves_view_as_read(action, view) for action in decision.actions):
            view = self._fresh_view(view)
        self._set_status(view, local, decision.reason, None if ok else self.executor.last_error, started)

    def _set_status(self, view: ClusterView | None, local: LocalState | None, reason: str, error: str | None,
                    started: float) -> None:
        leader = view.leader.name if view and view.leader else None
        if view is not None:
            self._revision_seen = view.revision
        changes = self.status.leader_changes + (1 if leader and leader != self._last_leader else 0)
        self._last_leader = leader or self._last_leader
        now = self.clock.monotonic()
        job = self.executor.clone_job if self.executor.clone_job and not self.executor.clone_job.finished else None
        self.status = NodeStatus(
            name=self.me.name, witness=self.me.witness, view=view or (self.status.view if job else None),
            local=local, decision=reason, cycle_monotonic=now,
            dcs_last_seen_wall=self.clock.wall() if view is not None else self.status.dcs_last_seen_wall,
            lease_valid_s=self.executor.lease.valid_for(now), demote_margin_s=self.timing.demote_margin_s,
            error=error, cycles=self.status.cycles + 1, leader_changes=changes, loop_duration_s=now - started,
            activity="creating replica" if job else None, progress=job.percent if job else None,
            extra={"raft": self._raft_status(), "failsafe_mode_is_active": self.failsafe_active()},
        )
        self._on_status(self.status)

    def _promoted(self) -> None:
        """PostgreSQL was just promoted under this cycle's lease: publish that at once. The rest of the
        promotion (slots, the history row, clearing the failover key) takes tens of milliseconds during
        which health checks would still answer from the last cycle's status, i.e. not primary: a switchover
        client waited that long for a write (issue 15). The member key follows at the end of the cycle."""
        view, now = self._cycle_view, self.clock.monotonic()
        if view is None:
            return
        held = replace(view, leader=Leader(self.me.name, self.executor.account.leader_revision or 0))
        self.status = replace(self.status, view=held, cycle_monotonic=now, decision="promoted",
                              lease_valid_s=self.executor.lease.valid_for(now),
                              demote_margin_s=self.timing.demote_margin_s)
        self._on_status(self.status)

    def _cloning(self, job: CloneJob, started: float) -> Decision:
        """A clone runs in the background: neither observe the half-copied data directory nor decide;
        keep the member key fresh (state "creating replica", with the progress) and the status current."""
        view = self._read()
        if view is not None:
            self.timing = self._timing(view.config)
        decision = Decision((), job.describe())
        self._publish_member(None)
        self._set_status(view, None, decision.reason, None, started)
        return decision

    def _fresh_view(self, view: ClusterView) -> ClusterView:
        """After acting, re-read so status shows this cycle's outcome, not its start (locally and cheaply on
        the embedded Raft; one request on etcd or Consul)."""
        try:
            return self.dcs.load(linearizable=False, timeout_s=self._budget(min(1.0, self.timing.retry_timeout_s)))
        except DcsError:
            return view

    def member(self, local: LocalState | None) -> Member:
        local = local or LocalState()
        role = node_role(local, self.me.witness)
        state = "running" if (self.me.witness or local.running) else "stopped"
        if local.is_replica and local.streaming:
            state = "streaming"
        member = Member(
            name=self.me.name, role=role, state=state, api_url=self.me.api_url, conn_url=self.me.conn_url,
            timeline=local.timeline, lsn=local.lsn, replay_lsn=local.replay_lsn,
            receive_lsn=local.receive_lsn, sysid=local.sysid, tags=self.me.tags, witness=self.me.witness,
            pending_restart=local.pending_restart, server_version=local.server_version,
            raft_addr=self.me.raft_addr, version=self.version,
        )
        return member

    def _publish_member(self, local: LocalState | None, dcs_down: bool = False) -> None:
        """This member's key; while a clone runs (from the cycle that started it): "creating replica".
        ``dcs_down``: this cycle could not read the DCS, so a short try (the next cycle matters more)."""
        member, job = self.member(local), self.executor.clone_job
        if job is not None and not job.finished:
            member = replace(member, state="creating replica", progress=job.percent)
        cap_s = 0.5 if dcs_down else 2.0
        try:
            self.dcs.touch_member(member, self.timing.ttl_s,
                                  timeout_s=self._budget(min(cap_s, self.timing.retry_timeout_s)))
        except DcsError as exc:
            log.debug("cannot update my member key: %s", exc)

    # ------------------------------------------------------------------ running
    def next_wake_s(self, decision: Decision, ok: bool) -> float:
        """How long to wait before the next cycle (the simulation uses this too). After a failed action:
        0.2 s, doubled for every further failure in a row up to ``loop_wait`` (an action that keeps
        failing, e.g. on a server out of connection slots, must not spin the loop), or ``loop_wait`` at
        once when that action waits on something (``retry_soon`` False). At once after this node became
        a primary (its replicas need their slots and its lease a renewal on the cluster's own timing);
        ``SETTLED_S`` later while a new ``synchronous_standby_names`` settles (the sync or quorum key
        follows it one step a cycle); after a decision that waits on another member's key, its
        ``poll_s`` (the watch does not wake on member keys), or after starting a replica (its member key
        turns "streaming" a moment later); else ``loop_wait``. Never past the moment the lease must be
        renewed or given up."""
        loop_wait_s = float(self.timing.loop_wait_s)
        if not ok:
            failed = self.executor.failed
            retry_soon = failed is None or failed.retry_soon
            in_a_row = max(1, self.memory.failed_in_a_row)
            wait_s = min(loop_wait_s, RETRY_FIRST_S * 2 ** min(in_a_row - 1, 16)) if retry_soon else loop_wait_s
        elif decision.has(Initdb) or decision.has(Promote) or decision.has(StartPrimary):
            return 0.0
        elif decision.has(StartReplica) or decision.has(FollowLeader):
            # the member key just published says "running"; it says "streaming" once the next cycle has
            # seen the WAL receiver connect, typically within a second (raftpgctl list, and the primary's
            # choice of synchronous standbys, read it there)
            wait_s = min(loop_wait_s, REPLICA_STARTED_POLL_S)
        elif decision.has(SetSynchronousStandbys) or self._settling():
            wait_s = min(loop_wait_s, SETTLED_S + 0.05)  # the next step of the sync/quorum plan is due soon
        else:
            wait_s = loop_wait_s if decision.poll_s is None else min(loop_wait_s, decision.poll_s)
        return self.executor.lease.budget(wait_s, self.clock.monotonic(), self.timing.demote_margin_s, floor_s=0.05)

    def _settling(self) -> bool:
        """Synchronous replication is on, a new synchronous_standby_names was seen and its safe position
        is not taken yet."""
        seen, view = self.memory.standby_names_seen, self._cycle_view
        return seen is not None and seen[2] is None and view is not None and view.config.synchronous_mode

    def _wait(self, decision: Decision, ok: bool) -> None:
        if self._stop.is_set():
            return
        wait_s = self.next_wake_s(decision, ok)
        if wait_s <= 0 or (not ok and wait_s <= 0.5):
            self._wake.wait(wait_s)
            self._wake.clear()
            return
        # Watch from the last view, or after a failed read from the last view it had: when the store
        # comes back (a quorum of Raft voters restarted), what changed meanwhile (an acquire of the leader
        # key this node sent, whose outcome was unknown, has committed) wakes the loop; it slept loop_wait,
        # leaving the cluster without a primary for that long (found from outside at loop_wait 10).
        revision = self.status.view.revision if self.status.view else self._revision_seen
        end = self.clock.monotonic() + wait_s
        while not self._stop.is_set() and not self._wake.is_set():
            remaining = end - self.clock.monotonic()
            if remaining <= 0:
                break
            if revision is not None and self.dcs.watch(revision, min(0.5, remaining)):
                break
            if revision is None:
                self._wake.wait(min(0.5, remaining))
        self._wake.clear()

    def run(self) -> None:
        """Cycle until ``stop()``; then shut down cleanly (a primary releases the key at once)."""
        while not self._stop.is_set():
            try:
                decision = self.cycle()
                ok = self.status.error is None
            except FatalRefusal as exc:
                self.fatal = str(exc)
                log.critical("refusing to continue: %s", exc)
                break
            except Exception:  # a bug must not kill the loop silently; the fence covers the primary
                log.exception("HA cycle failed")
                decision, ok = Decision((), "cycle failed"), False
                self.memory = replace(self.memory, failed_in_a_row=self.memory.failed_in_a_row + 1)
            self._wait(decision, ok)
        self.shutdown()

    def shutdown(self) -> None:
        """A clean stop (safety rule 11): stop PostgreSQL fast, then give the leader key back at once so a
        replica takes over without waiting for the TTL. Whatever stopped PostgreSQL (this method, or a
        signal that reached the whole service) the key is released once no postmaster runs; the
        release is a compare-and-set on this node's name, so it never touches another holder's key."""
        local = self.pg.observe() if self.pg else None
        if self.pg and local and local.postmaster_pid is not None and self._detach_when_paused(local):
            self.executor.drop_lease()
            self.executor.disarm_watchdog()
            return
        if self.pg and local and local.postmaster_pid is not None:
            try:
                self.pg.stop("fast", 120)
            except Exception as exc:  # noqa: BLE001
                log.error("could not stop PostgreSQL cleanly: %s; stopping immediately", exc)
                self.pg.stop("immediate", 30)
        stopped = self.pg.observe() if self.pg else None
        if stopped is not None:
            # before the key is released: a replica woken by the release must see this member stopped,
            # not the running primary it last published (with an equal position that stale key won the
            # tie-break by name, and nobody promoted until it expired)
            self._publish_member(stopped)
        if stopped is not None and stopped.postmaster_pid is None and self._held_leader_key():
            try:
                if stopped.lsn is not None:
                    self.dcs.set_status(stopped.lsn, timeout_s=self.timing.retry_timeout_s)
                if self.dcs.release_leader(self.me.name, timeout_s=self.timing.retry_timeout_s):
                    log.info("released the leader key after a clean shutdown")
            except DcsError as exc:
                log.warning("could not release the leader key: %s", exc)
        self.executor.drop_lease()
        self.executor.disarm_watchdog()  # a device closed without the magic character keeps counting

    def _detach_when_paused(self, local: LocalState) -> bool:
        """A stop while the cluster is paused leaves PostgreSQL running, as Patroni does (an agent
        upgrade without downtime): the supervisor stops fencing and the next agent adopts the server.
        The leader key is kept (it expires with its TTL; paused, nobody promotes). A server that may
        accept writes is first recorded as ``detached_primary`` in the config key, so that nobody
        promotes, even after a resume or on an operator's failover, while it may run unfenced; if that
        cannot be recorded, the stop goes on as usual. True if PostgreSQL was left running."""
        view = self.status.view
        if self.pg is None or view is None or not view.paused or view.config_revision is None:
            return False
        if local.may_accept_writes and view.config.detached_primary != self.me.name:
            document = {**view.config.to_dict(), "detached_primary": self.me.name}
            try:
                if not self.dcs.set_config(document, view.config_revision, timeout_s=self.timing.retry_timeout_s):
                    log.error("paused, but the config key changed meanwhile: stopping PostgreSQL as usual")
                    return False
            except DcsError as exc:
                log.error("paused, but detached_primary could not be recorded (%s): stopping PostgreSQL as usual",
                          exc)
                return False
        if not self.pg.detach():
            return False
        log.warning("paused: leaving PostgreSQL running without this agent; the next agent adopts it")
        return True

    def _held_leader_key(self) -> bool:
        view = self.status.view
        return self.executor.lease.deadline is not None or bool(view and view.leader
                                                                   and view.leader.name == self.me.name)


def _leaves_view_as_read(action: Action, view: ClusterView) -> bool:
    """Whether ``action``, done, leaves the DCS as ``view`` shows it, so that re-reading it after the cycle
    (``_fresh_view``) would show nothing new of this node's doing: a renewal keeps the leader key's holder
    and revision (a touch or a lease keepalive), and a position the view already holds is not rewritten.
    An idle primary's cycle is just these two; on etcd the re-read was one more request a second."""
    if isinstance(action, RenewLeaderKey):
        return True
    if isinstance(action, PublishPosition):
        return (action.lsn, action.slots, action.failsafe) == (view.last_lsn, view.slot_positions, view.failsafe)
    return False
