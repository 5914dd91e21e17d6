"""Carry out a Decision: each action becomes DCS and PostgreSQL calls, in order, stopping at the first
failure (the next cycle decides afresh). One ``match`` over the action types; every choice between
sequences was made by ``decide``. The lease account (``lease.py``) guards the irreversible steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, assert_never

from raftpg.clock import Clock
from raftpg.dcs.base import Dcs
from raftpg.ha import actions as act
from raftpg.ha.background import CloneJob
from raftpg.ha.failsafe import reserve_s as failsafe_reserve_s
from raftpg.ha.history import history_rows
from raftpg.ha.inputs import Inputs, LeaseState, Me
from raftpg.ha.lease import SUPERVISOR_FENCE_LATENCY_S, LeaseAccount, Timing
from raftpg.ha.ports import FailsafePeers, PostgresPort, WatchdogPort
from raftpg.model.slots import slot_name_for

__all__ = ["SUPERVISOR_FENCE_LATENCY_S", "Executor", "FatalRefusal", "Timing"]

log = logging.getLogger(__name__)


class FatalRefusal(Exception):
    """The agent must stop (safety rule 7)."""


class Started:
    """An action handed to a background job (a clone): not a failure; the actions after it wait."""


STARTED = Started()


class Executor:
    def __init__(self, dcs: Dcs, pg: PostgresPort | None, watchdog: WatchdogPort | None, clock: Clock,
                 me: Me, bootstrap_dcs: dict[str, Any] | None = None, *, clone_in_background: bool = False,
                 wake: Callable[[], None] | None = None, failsafe_peers: FailsafePeers | None = None) -> None:
        """``clone_in_background``: the agent's loop copies a replica on a thread of its own (a large one
        takes hours), the simulation and tests inline; ``wake`` (the loop's) starts the next cycle when
        that copy ends; ``failsafe_peers``: how a primary cut off from the DCS asks the other members."""
        self.dcs, self.pg, self.clock, self.me = dcs, pg, clock, me
        self.bootstrap_dcs = bootstrap_dcs or {}
        self.account = LeaseAccount(me.name, pg, watchdog, clock)
        self.following: str | None = None      # the leader this replica was last pointed at
        self.last_error: str | None = None
        self.failed: act.Action | None = None  # the action that stopped the last run, if one did
        self.clone_in_background = clone_in_background
        self.clone_job: CloneJob | None = None
        self.wake = wake or (lambda: None)
        self.failsafe_peers = failsafe_peers
        self.on_promoted: Callable[[], None] = lambda: None  # the loop's: publish an interim status

    @property
    def lease(self) -> LeaseState:
        return self.account.state

    def drop_lease(self) -> None:
        self.account.drop()

    def push_fence(self, timing: Timing) -> None:
        self.account.push_fence(timing)

    def disarm_watchdog(self) -> None:
        self.account.disarm_watchdog()

    def run(self, decision: act.Decision, inputs: Inputs, timing: Timing) -> bool:
        """Execute in order; return False at the first failed action (the rest are skipped)."""
        self.failed = None
        for action in decision.actions:
            started = self.clock.monotonic()
            try:
                ok = self._do(action, inputs, timing)
            except FatalRefusal:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure ends the sequence
                self.failed, self.last_error = action, f"{type(action).__name__}: {exc}"
                log.warning("action %s failed: %s", type(action).__name__, exc)
                return False
            if ok is STARTED:  # the rest is decided afresh once the copy ends (``take_clone_job``)
                break
            if not ok:
                self.failed, self.last_error = action, f"{type(action).__name__}: not done"
                log.info("action %s did not succeed; deciding afresh next cycle", type(action).__name__)
                return False
            log.debug("action %s done in %.3fs", type(action).__name__, self.clock.monotonic() - started)
        self.last_error = None
        return True

    def _do(self, action: act.Action, i: Inputs, t: Timing) -> bool | Started:  # noqa: C901 - one case per action
        dcs, pg, account, name, budget_s = self.dcs, self.pg, self.account, self.me.name, t.retry_timeout_s
        match action:
            case act.RaceInitialize():
                return dcs.initialize(timeout_s=budget_s)
            case act.CancelInitialize():
                dcs.cancel_initialize(timeout_s=budget_s)
            case act.AdoptExistingData(sysid=sysid):
                dcs.set_initialize(sysid, timeout_s=budget_s)
            case act.RegisterCluster():
                account.require(t, "register the new cluster")
                new_sysid = self._pg(pg).observe().sysid
                if not new_sysid:
                    raise RuntimeError("the new data directory has no system identifier")
                dcs.set_initialize(new_sysid, timeout_s=budget_s)
            case act.StoreInitialConfig():
                return dcs.set_config(self.bootstrap_dcs, None, timeout_s=budget_s)
            case act.ClearDetachedMarker(expected_revision=revision):
                assert i.view is not None
                document = {k: v for k, v in i.view.config.to_dict().items() if k != "detached_primary"}
                if not dcs.set_config(document, revision, timeout_s=budget_s):
                    return False
                log.info("my PostgreSQL is fenced again: removed detached_primary from the config")
            case act.AcquireLeaderKey():
                # the first irreversible step of a failover rests on what was observed at i.now: an
                # agent that froze (or read slowly) since decides afresh instead
                stale_s = self.clock.monotonic() - i.now
                if stale_s > max(1.0, t.loop_wait_s):
                    log.warning("not taking the leader key: the decision is %.1fs old; deciding afresh", stale_s)
                    return False
                return account.call(dcs.acquire_leader, t)
            case act.RenewLeaderKey():
                # failsafe_mode: a DCS that stopped answering since this cycle's read must not use up the
                # time the members' answers need before the demotion point (as the loop's read keeps it)
                return account.call(dcs.renew_leader, t, reserve_s=failsafe_reserve_s(i.memory.failsafe_members))
            case act.ReleaseLeaderKey():
                account.drop()
                dcs.release_leader(name, timeout_s=budget_s)
            case act.HandOverLeaderKey(candidate=candidate):
                state = self._pg(pg).observe()
                if state.running or state.postmaster_pid is not None:
                    raise RuntimeError("PostgreSQL still running: refusing to hand over the leader key")
                if state.lsn is not None:
                    dcs.set_status(state.lsn, timeout_s=budget_s)
                account.drop()
                return dcs.hand_over_leader(name, candidate, t.ttl_s, timeout_s=budget_s)
            case act.ClearFailoverKey(expected_revision=revision, reason=reason):
                if reason and reason != "done":
                    log.warning("clearing failover request: %s", reason)
                dcs.set_failover(None, revision, timeout_s=budget_s)
            case act.WriteSyncKey(standbys=standbys, expected_revision=revision, quorum=quorum):
                return dcs.set_sync(name, standbys, revision, timeout_s=budget_s, quorum=quorum) is not None
            case act.PublishPosition(lsn=lsn, slots=slots, failsafe=failsafe):
                dcs.set_status(lsn, dict(slots), None if failsafe is None else dict(failsafe), timeout_s=budget_s)
            case act.AskFailsafe(members=members):
                return self._ask_failsafe(members, t)
            case act.RecordPromotion(reason=reason):
                state = self._pg(pg).observe()
                assert i.view is not None
                dcs.set_history(history_rows(i.view.history, state.timeline, state.lsn, reason, self.clock.wall(),
                                             name), timeout_s=budget_s)
                if state.lsn is not None:
                    dcs.set_status(state.lsn, timeout_s=budget_s)
            case act.Initdb():
                with account.keeping(dcs.renew_leader, t):
                    self._pg(pg).initdb()
            case act.PostBootstrap():
                with account.keeping(dcs.renew_leader, t):
                    self._pg(pg).post_bootstrap()
            case act.FinishBootstrap():
                self._pg(pg).finish_bootstrap()
            case act.StartPrimary():
                account.arm_for_primary(t, "start a primary")
                self._publish_epoch()
                self._pg(pg).start(None, None, as_replica=False, timeout_s=max(30.0, t.retry_timeout_s),
                                   fence_deadline=account.fence_deadline(t))
            case act.Promote():
                self._promote(t)
            case act.StartReplica(leader=leader, conn_url=conn_url, remote=remote, remote_slot=remote_slot):
                pg = self._pg(pg)
                pg.unlimited()
                slot = remote_slot if remote else slot_name_for(name) if conn_url else None
                pg.start(conn_url, slot, as_replica=True, timeout_s=max(10.0, t.retry_timeout_s))
                self.following = leader
            case act.FollowLeader(leader=leader, conn_url=conn_url, remote=remote, remote_slot=remote_slot):
                self._pg(pg).follow(conn_url, remote_slot if remote else slot_name_for(name))
                self.following = leader
            case act.CloneStandbyLeader(conn_url=conn_url):
                with account.keeping(dcs.renew_leader, t):
                    self._pg(pg).clone(conn_url, timeout_s=None)
            case act.CheckReachable(leader=leader, conn_url=conn_url):
                if not self._pg(pg).can_reach(conn_url):
                    log.warning("cannot reach %s: leaving this data directory as it is", leader)
                    return False
            case act.Rewind(conn_url=conn_url):
                return self._pg(pg).rewind(conn_url, timeout_s=300)
            case act.CloneFrom(source=source, conn_url=conn_url):
                return self._clone(source, conn_url)
            case act.MoveDataAside(reason=reason, immediate=immediate):
                pg = self._pg(pg)
                if pg.observe().postmaster_pid is not None:
                    pg.stop("immediate" if immediate else "fast", 60)
                log.warning("%s: data directory kept at %s", reason, pg.move_data_aside())
            case act.RecordRepair():
                pass  # counted by the loop's memory (ha/memory.py)
            case act.StopPostgres(mode=mode, reason=reason, within_s=within_s):
                log.warning("stopping PostgreSQL (%s): %s", mode, reason)
                self._pg(pg).stop(mode, within_s)
                account.disarm_watchdog()
                self.following = None
            case act.RestartPostgres():
                primary = bool(i.local and i.local.is_primary)
                if primary:
                    account.require(t, "restart a primary")
                self._pg(pg).restart(timeout_s=max(30.0, t.retry_timeout_s),
                                     fence_deadline=account.fence_deadline(t) if primary else None)
            case act.ReloadPostgres():
                self._pg(pg).reload()
            case act.ApplyClusterConfig(config=config):
                if self._pg(pg).apply_cluster_config(config):
                    log.info("applied the cluster-wide PostgreSQL settings from the DCS config")
            case act.Checkpoint():
                self._pg(pg).checkpoint()
            case act.EnsureSlots(members=members, permanent=permanent, retain_s=retain_s):
                physical = {slot_name_for(m) for m in members}
                self._pg(pg).ensure_slots(physical | {slot.name for slot in permanent if not slot.logical},
                                          frozenset(physical), retain_s)
                # a logical slot that cannot be made (wal_level, a missing database or plugin) is logged
                # there and never fails the action: the physical slots and what follows must not wait on it
                self._pg(pg).ensure_logical_slots(tuple(s for s in permanent if s.logical and s.name not in physical))
            case act.FollowSlots(positions=positions, members=members, retain_s=retain_s, logical=logical,
                                 source=source):
                self._pg(pg).ensure_slots({name for name, _ in positions}, frozenset(members), retain_s)
                self._pg(pg).advance_slots(dict(positions))
                if source is not None:
                    self._pg(pg).follow_logical_slots(logical, source)
            case act.SetSynchronousStandbys(value=value):
                self._pg(pg).set_synchronous_standby_names(value)
            case act.Refuse(reason=reason):
                raise FatalRefusal(reason)
            case act.Fence(reason=reason):
                log.critical("fencing PostgreSQL: %s", reason)
                if pg is not None:
                    pg.stop("immediate", 30)
            case _:
                assert_never(action)
        return True

    def _clone(self, source: str, conn_url: str) -> bool | Started:
        """Inline (``clone_in_background`` off: the simulation, tests), or started on a job's thread; the
        loop neither observes nor decides until it ends, then takes the job back (``take_clone_job``)."""
        pg = self._pg(self.pg)
        if not self.clone_in_background:
            pg.clone(conn_url, timeout_s=None)
            return True
        if self.clone_job is not None:
            return STARTED
        self.clone_job = CloneJob(source, conn_url, lambda report: pg.clone(conn_url, None, report), self.wake)
        log.info("%s, in the background", self.clone_job.describe())
        return STARTED

    def take_clone_job(self) -> CloneJob | None:
        """The background copy once it has ended (and forget it); None while it runs, or when there is none.
        What comes next is decided afresh: a copy that never started (``backup_label``) is started as a
        replica by ``decide``, a failed one is moved aside or copied again."""
        job = self.clone_job
        if job is None or not job.finished:
            return None
        self.clone_job = None
        return job

    def _ask_failsafe(self, members: tuple[tuple[str, str], ...], t: Timing) -> bool:
        """Every member must accept; then the lease counts from the moment the requests were sent (each
        member holds back from the race for ttl after it received one, which is later)."""
        if self.failsafe_peers is None:
            raise RuntimeError("failsafe_mode: this agent cannot reach the other members' REST APIs")
        sent = self.clock.monotonic()
        budget = self.account.state.budget(2.0, sent, t.demote_margin_s)
        request = {"name": self.me.name, "conn_url": self.me.conn_url, "api_url": self.me.api_url}
        answers = self.failsafe_peers.ask(members, request, budget) if members else {}
        refused = {name: answers.get(name, "no answer") for name, _ in members if answers.get(name, "no answer")}
        if refused:
            log.warning("failsafe_mode: not every member accepts me as the primary: %s",
                        "; ".join(f"{name}: {why}" for name, why in sorted(refused.items())))
            return False
        self.account.confirm(sent, t)
        return True

    @staticmethod
    def _pg(pg: PostgresPort | None) -> PostgresPort:
        if pg is None:
            raise RuntimeError("this node has no PostgreSQL (a witness)")
        return pg

    def _publish_epoch(self) -> None:
        """Tag what this primary acknowledges with the leader key's revision (``raftpg.leader_epoch``), so
        clients and jepsen-lite can order primaries exactly. Best effort: never stops a promotion."""
        revision = self.account.leader_revision
        if self.pg is None or revision is None:
            return
        try:
            self.pg.publish_epoch(revision)
        except Exception as exc:  # noqa: BLE001 - observability only
            log.warning("could not publish the leader epoch: %s", exc)

    def _promote(self, t: Timing) -> None:
        pg, account = self._pg(self.pg), self.account
        account.arm_for_primary(t, "promote")
        self._publish_epoch()
        account.require(t, "promote")  # publishing took time: the lease must still hold
        # health checks may say "primary" as soon as PostgreSQL accepts writes under the held lease: not
        # after the files are rewritten (10-20 ms) nor after the checkpoint below, which waits for the
        # end-of-recovery one (20-30 ms of a switchover's write gap) and guards rewinders, who read the
        # member key published at the end of the cycle, not this status
        pg.promote(timeout_s=max(10.0, t.retry_timeout_s), on_writable=self.on_promoted)
        self.following = None
        # PostgreSQL spreads the end-of-recovery checkpoint out; until it completes, the control file
        # still names the old timeline and a pg_rewind from this server copies an inconsistent state.
        # Force it now: this member publishes role=primary only after it, and rewinders wait for that.
        fence = account.fence_deadline(t) or self.clock.monotonic()
        try:  # bounded: a long checkpoint must not hold the loop past its next renewal
            pg.checkpoint(timeout_s=max(1.0, min(10.0, fence - self.clock.monotonic() - t.loop_wait_s)))
        except Exception as exc:  # noqa: BLE001 - promoted regardless; the checkpoint goes on in the background
            log.warning("checkpoint after promotion failed: %s", exc)
