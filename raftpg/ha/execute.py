"""Carry out a Decision: each action becomes DCS and PostgreSQL calls, in order, stopping at the first
failure. The executor owns the node's lease account (safety rule 2): an acquire or renew counts from
the moment it was *sent*, and the fencing supervisor and the watchdog are armed from that account
before PostgreSQL is promoted or started as a primary (safety rules 1 and 6).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from raftpg.clock import Clock
from raftpg.dcs.base import Dcs, DcsError
from raftpg.ha import actions as act
from raftpg.ha.inputs import Inputs, LeaseState, Me
from raftpg.ha.ports import PostgresPort, WatchdogPort
from raftpg.model import ClusterView

log = logging.getLogger(__name__)


# How long past its deadline the fencing supervisor may let PostgreSQL accept writes: it checks the
# deadline every 50 ms, then SIGKILLs the postmaster's group if SIGQUIT has not ended it within 1 s
# (raftpg/pg/supervisor.py POLL_S + KILL_AFTER_S; tests/scenarios/test_fencing.py ties the two).
SUPERVISOR_FENCE_LATENCY_S = 1.05


class FatalRefusal(Exception):
    """The agent must stop (safety rule 7)."""


@dataclass(frozen=True)
class Timing:
    ttl_s: float
    loop_wait_s: float
    retry_timeout_s: float
    watchdog_safety_margin_s: float = 5.0

    @property
    def fence_margin_s(self) -> float:
        """The supervisor's deadline is this long before the lease could expire anywhere: its worst-case
        latency (writes may go on that long past its deadline), scheduling slack, and 2% of the TTL for
        clock-rate drift between this machine and the Raft leader's."""
        return SUPERVISOR_FENCE_LATENCY_S + 0.25 + 0.02 * self.ttl_s

    @property
    def demote_margin_s(self) -> float:
        """The loop demotes this long before the lease could expire: before the supervisor must, and,
        like a watchdog armed with ttl - safety_margin, no later than ttl - safety_margin after the last
        renewal (capped at half the TTL so a short TTL still rides out one failed renewal)."""
        return max(self.fence_margin_s + min(1.0, self.loop_wait_s),
                   min(self.watchdog_safety_margin_s, self.ttl_s / 2))


class Executor:
    def __init__(self, dcs: Dcs, pg: PostgresPort | None, watchdog: WatchdogPort | None, clock: Clock,
                 me: Me) -> None:
        self.dcs, self.pg, self.watchdog, self.clock, self.me = dcs, pg, watchdog, clock, me
        self.lease = LeaseState()
        self.following: str | None = None
        self.last_error: str | None = None

    # ----------------------------------------------------------------- lease account
    def _lease_call(self, fn: Any, timing: Timing, *args: Any) -> bool:
        sent = self.clock.monotonic()
        budget = timing.retry_timeout_s
        if self.lease.deadline is not None:
            budget = min(budget, max(0.2, self.lease.deadline - timing.demote_margin_s - sent))
        leader = fn(self.me.name, *args, timing.ttl_s, timeout_s=budget)
        if not leader:
            self.lease = LeaseState()
            return False
        self.lease = LeaseState(sent + timing.ttl_s)
        self.push_lease(timing)
        return True

    def fence_lease_s(self, timing: Timing) -> float:
        """How long the fencing supervisor may let writes continue from now."""
        if self.lease.deadline is None:
            return 0.0
        return max(0.0, self.lease.deadline - self.clock.monotonic() - timing.fence_margin_s)

    def push_lease(self, timing: Timing) -> None:
        """Tell the fencing supervisor (and watchdog) how long writes may continue."""
        if self.pg is None or self.lease.deadline is None:
            return
        self.pg.lease(self.fence_lease_s(timing))
        if self.watchdog is not None and self.watchdog.armed:
            self.watchdog.keepalive()

    def drop_lease(self) -> None:
        self.lease = LeaseState()

    def disarm_watchdog(self) -> None:
        """Magic-close the watchdog if armed: PostgreSQL is no longer a primary, or the agent is stopping.
        A device left armed and no longer kicked would reset the machine for nothing."""
        if self.watchdog is None or not self.watchdog.armed:
            return
        try:
            self.watchdog.disarm()
            log.info("watchdog disarmed")
        except Exception as exc:  # noqa: BLE001 - a failing device must not stop the loop
            log.error("could not disarm the watchdog: %s", exc)

    # ----------------------------------------------------------------- run
    def run(self, decision: act.Decision, inputs: Inputs, timing: Timing) -> bool:
        """Execute in order; return False at the first failed action (the rest are skipped)."""
        for action in decision.actions:
            started = time.monotonic()
            try:
                ok = self._do(action, inputs, timing)
            except FatalRefusal:
                raise
            except (DcsError, Exception) as exc:  # noqa: BLE001 - every failure ends the sequence
                self.last_error = f"{type(action).__name__}: {exc}"
                log.warning("action %s failed: %s", type(action).__name__, exc)
                return False
            if not ok:
                self.last_error = f"{type(action).__name__}: not done"
                log.info("action %s did not succeed; deciding afresh next cycle", type(action).__name__)
                return False
            log.debug("action %s done in %.3fs", type(action).__name__, time.monotonic() - started)
        self.last_error = None
        return True

    def _view(self, inputs: Inputs) -> ClusterView:
        assert inputs.view is not None
        return inputs.view

    def _do(self, action: act.Action, inputs: Inputs, timing: Timing) -> bool:
        handler = getattr(self, "_" + type(action).__name__, None)
        if handler is None:
            raise NotImplementedError(type(action).__name__)
        return bool(handler(action, inputs, timing))

    # ----------------------------------------------------------------- DCS actions
    def _RaceInitialize(self, a: act.RaceInitialize, i: Inputs, t: Timing) -> bool:
        return self.dcs.initialize(timeout_s=t.retry_timeout_s)

    def _AdoptExistingData(self, a: act.AdoptExistingData, i: Inputs, t: Timing) -> bool:
        self.dcs.set_initialize(a.sysid, timeout_s=t.retry_timeout_s)
        return True

    def _AcquireLeaderKey(self, a: act.AcquireLeaderKey, i: Inputs, t: Timing) -> bool:
        return self._lease_call(self.dcs.acquire_leader, t)

    def _RenewLeaderKey(self, a: act.RenewLeaderKey, i: Inputs, t: Timing) -> bool:
        return self._lease_call(self.dcs.renew_leader, t)

    def _ReleaseLeaderKey(self, a: act.ReleaseLeaderKey, i: Inputs, t: Timing) -> bool:
        self.drop_lease()
        self.dcs.release_leader(self.me.name, timeout_s=t.retry_timeout_s)
        return True

    def _HandOverLeaderKey(self, a: act.HandOverLeaderKey, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        state = self.pg.observe()
        if state.running:
            raise RuntimeError("PostgreSQL still running: refusing to hand over the leader key")
        if state.lsn is not None:
            self.dcs.set_status(state.lsn, timeout_s=t.retry_timeout_s)
        done = self.dcs.hand_over_leader(self.me.name, a.candidate, t.ttl_s, timeout_s=t.retry_timeout_s)
        self.drop_lease()
        return done

    def _ClearFailoverKey(self, a: act.ClearFailoverKey, i: Inputs, t: Timing) -> bool:
        if a.reason and a.reason != "done":
            log.warning("clearing failover request: %s", a.reason)
        self.dcs.set_failover(None, a.expected_revision, timeout_s=t.retry_timeout_s)
        return True

    def _WriteSyncKey(self, a: act.WriteSyncKey, i: Inputs, t: Timing) -> bool:
        return self.dcs.set_sync(self.me.name, a.standbys, a.expected_revision,
                                 timeout_s=t.retry_timeout_s) is not None

    def _PublishPosition(self, a: act.PublishPosition, i: Inputs, t: Timing) -> bool:
        self.dcs.set_status(a.lsn, timeout_s=t.retry_timeout_s)
        return True

    def _RecordPromotion(self, a: act.RecordPromotion, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        state = self.pg.observe()
        view = self._view(i)
        rows = [[e.timeline, e.lsn, e.reason, e.timestamp, e.new_leader] for e in view.history]
        previous_timeline = max(1, (state.timeline or 2) - 1)
        rows.append([previous_timeline, state.lsn or 0, a.reason, self.clock.wall(), self.me.name])
        self.dcs.set_history(rows[-100:], timeout_s=t.retry_timeout_s)
        if state.lsn is not None:
            self.dcs.set_status(state.lsn, timeout_s=t.retry_timeout_s)
        return True

    # ----------------------------------------------------------------- PostgreSQL actions
    def _arm_for_primary(self, t: Timing) -> None:
        if self.lease.deadline is None:
            raise RuntimeError("no leader lease: refusing to run a primary")
        if self.watchdog is not None:
            if not self.watchdog.arm(t.ttl_s - t.watchdog_safety_margin_s):
                raise RuntimeError("watchdog is required but could not be armed: not promoting")
        self.push_lease(t)

    def _Bootstrap(self, a: act.Bootstrap, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        try:
            sysid = self.pg.bootstrap(lease_s=self.fence_lease_s(t))
        except Exception:
            self.dcs.cancel_initialize(timeout_s=t.retry_timeout_s)
            self.dcs.release_leader(self.me.name, timeout_s=t.retry_timeout_s)
            self.drop_lease()
            raise
        if not self._lease_call(self.dcs.renew_leader, t):
            self.pg.stop("immediate", 30)
            raise RuntimeError("lost the leader key during bootstrap")
        try:
            # As Patroni: armed once the new cluster runs (arming before initdb would let a slow initdb
            # reset the machine). Until then nobody else has data and the supervisor's lease fences.
            self._arm_for_primary(t)
        except Exception:
            # fail closed: never leave a primary running that required mode says must not run
            self.pg.stop("immediate", 30)
            self.dcs.cancel_initialize(timeout_s=t.retry_timeout_s)
            self.dcs.release_leader(self.me.name, timeout_s=t.retry_timeout_s)
            self.drop_lease()
            raise
        self.dcs.set_initialize(sysid, timeout_s=t.retry_timeout_s)
        return True

    def _StartPrimary(self, a: act.StartPrimary, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self._arm_for_primary(t)
        self.pg.start(None, None, as_replica=False, timeout_s=max(10.0, t.retry_timeout_s),
                      lease_s=self.fence_lease_s(t))
        self.push_lease(t)
        return True

    def _Promote(self, a: act.Promote, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self._arm_for_primary(t)
        self.pg.promote(timeout_s=max(10.0, t.retry_timeout_s))
        self.following = None
        # PostgreSQL spreads the end-of-recovery checkpoint out; until it completes, the control file
        # still names the old timeline and a pg_rewind from this server copies an inconsistent state.
        # Force it now: this member publishes role=primary only after it, and rewinders wait for that.
        try:  # bounded: a long checkpoint must not hold the loop past its next renewal
            self.pg.checkpoint(timeout_s=max(1.0, min(10.0, self.fence_lease_s(t) - t.loop_wait_s)))
        except Exception as exc:  # noqa: BLE001 - promoted regardless; the checkpoint goes on in the background
            log.warning("checkpoint after promotion failed: %s", exc)
            return True
        return True

    def _StartReplica(self, a: act.StartReplica, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        slot = self.pg.slot_name_for(self.me.name)
        if a.rewind and a.conn_url:
            view = self._view(i)
            if not (view.config.use_pg_rewind and self.pg.rewind(a.conn_url, timeout_s=300)):
                if not self.pg.can_reach(a.conn_url):
                    # a cut link is not a reason to throw away a data dir: try again next cycle
                    raise RuntimeError(f"cannot reach {a.leader} to rewind or clone from; retrying later")
                kept = self.pg.move_data_aside()
                log.warning("could not rewind; old data kept at %s, cloning afresh", kept)
                self.pg.clone(a.conn_url, timeout_s=3600)
        self.pg.unlimited()
        self.pg.start(a.conn_url, slot if a.conn_url else None, as_replica=True,
                      timeout_s=max(10.0, t.retry_timeout_s))
        self.following = a.leader
        return True

    def _FollowLeader(self, a: act.FollowLeader, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.follow(a.conn_url, self.pg.slot_name_for(self.me.name))
        self.following = a.leader
        return True

    def _CloneFrom(self, a: act.CloneFrom, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.clone(a.conn_url, timeout_s=3600)
        return True

    def _Reinitialize(self, a: act.Reinitialize, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        if self.pg.observe().running:
            self.pg.stop("fast", 60)
        kept = self.pg.move_data_aside()
        log.warning("reinitializing: old data kept at %s", kept)
        self.pg.clone(a.conn_url, timeout_s=3600)
        return True

    def _StopPostgres(self, a: act.StopPostgres, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        log.warning("stopping PostgreSQL (%s): %s", a.mode, a.reason)
        self.pg.stop(a.mode, 60)
        self.disarm_watchdog()
        self.following = None
        return True

    def _Fence(self, a: act.Fence, i: Inputs, t: Timing) -> bool:
        log.critical("fencing PostgreSQL: %s", a.reason)
        if self.pg is not None:
            self.pg.stop("immediate", 30)
        return True

    def _RestartPostgres(self, a: act.RestartPostgres, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        primary = bool(i.local and i.local.is_primary)
        if primary and self.lease.deadline is None:
            raise RuntimeError("no leader lease: refusing to restart a primary")
        self.pg.restart(timeout_s=max(30.0, t.retry_timeout_s),
                        lease_s=self.fence_lease_s(t) if primary else None)
        return True

    def _ReloadPostgres(self, a: act.ReloadPostgres, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.reload()
        return True

    def _Checkpoint(self, a: act.Checkpoint, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.checkpoint()
        return True

    def _EnsureSlots(self, a: act.EnsureSlots, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.ensure_slots({self.pg.slot_name_for(m) for m in a.members})
        return True

    def _SetSynchronousStandbys(self, a: act.SetSynchronousStandbys, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.set_synchronous_standby_names(a.value)
        return True

    def _Refuse(self, a: act.Refuse, i: Inputs, t: Timing) -> bool:
        raise FatalRefusal(a.reason)
