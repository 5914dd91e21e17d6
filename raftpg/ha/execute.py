"""Carry out a Decision: each action becomes DCS and PostgreSQL calls, in order, stopping at the first
failure. The executor owns the node's lease account (safety rule 2): an acquire or renew counts from
the moment it was *sent*, and the fencing supervisor and the watchdog are armed from that account
before PostgreSQL is promoted or started as a primary (safety rules 1 and 6).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from raftpg.clock import Clock
from raftpg.dcs.base import Dcs, DcsError
from raftpg.ha import actions as act
from raftpg.ha.inputs import Inputs, LeaseState, Me
from raftpg.ha.ports import PostgresPort, WatchdogPort
from raftpg.model import ClusterView, DataDir

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
        self.repaired = False  # the last RepairReplica did stop and repair (False: the leader was unreachable)
        self.leader_revision: int | None = None  # the leader key's revision at the last acquire/renew
        self._lease_lock = threading.Lock()  # a LeaseKeeper renews from its own thread during long steps

    # ----------------------------------------------------------------- lease account
    def _lease_call(self, fn: Any, timing: Timing, *args: Any) -> bool:
        with self._lease_lock:
            sent = self.clock.monotonic()
            budget = timing.retry_timeout_s
            if self.lease.deadline is not None:
                budget = min(budget, max(0.2, self.lease.deadline - timing.demote_margin_s - sent))
            leader = fn(self.me.name, *args, timing.ttl_s, timeout_s=budget)
            if not leader:
                self.lease = LeaseState()
                return False
            self.lease = LeaseState(sent + timing.ttl_s)
            self.leader_revision = getattr(leader, "revision", None)
            self.push_fence(timing)
            self._kick_watchdog(timing)
            return True

    def fence_deadline(self, timing: Timing) -> float | None:
        """The absolute moment (monotonic) the fencing supervisor must stop writes: the lease's end minus
        the fence margin. None: no lease held."""
        if self.lease.deadline is None:
            return None
        return self.lease.deadline - timing.fence_margin_s

    def push_fence(self, timing: Timing) -> None:
        """Tell the fencing supervisor the lease's fence deadline. Absolute, so re-sending it never extends it."""
        deadline = self.fence_deadline(timing)
        if self.pg is not None and deadline is not None:
            self.pg.fence_at(deadline)

    def _kick_watchdog(self, timing: Timing) -> None:
        """Only after a *confirmed* renewal, and only as far as that renewal allows: the device is re-armed
        to fire ``safety_margin`` before the lease could expire anywhere (whole seconds, rounded down), so a
        slow renewal or a freeze right after a failed one never lets it fire later than that."""
        if self.watchdog is None or not self.watchdog.armed or self.lease.deadline is None:
            return
        remaining_s = self.lease.deadline - timing.watchdog_safety_margin_s - self.clock.monotonic()
        if remaining_s >= 1.0:
            self.watchdog.keepalive(float(math.floor(remaining_s)))

    def drop_lease(self) -> None:
        with self._lease_lock:
            self.lease = LeaseState()

    def _require_lease(self, timing: Timing, what: str) -> None:
        """Immediately before an irreversible step (promote, start or bootstrap a primary): the lease it
        relies on must still be good for longer than the demotion margin. A freeze between deciding and
        acting (or a slow action before this one) must not let a primary start on an expiring lease."""
        deadline = self.lease.deadline
        now = self.clock.monotonic()
        if deadline is None:
            raise RuntimeError(f"no leader lease: refusing to {what}")
        if deadline - now <= timing.demote_margin_s:
            raise RuntimeError(f"the leader lease ends in {max(0.0, deadline - now):.1f}s: refusing to {what}")

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
        # The first irreversible step of a failover: the eligibility it rests on was judged on what was
        # observed at i.now. If the agent froze (or its reads were slow) since, decide afresh instead.
        stale_s = self.clock.monotonic() - i.now
        if stale_s > max(1.0, t.loop_wait_s):
            log.warning("not taking the leader key: the decision is %.1fs old; deciding afresh", stale_s)
            return False
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
    def _publish_epoch(self) -> None:
        """Tag what this primary acknowledges with the leader key's revision (``raftpg.leader_epoch``), so
        clients and jepsen-lite can order primaries exactly. Best effort: never stops a promotion."""
        if self.pg is None or self.leader_revision is None:
            return
        try:
            self.pg.publish_epoch(self.leader_revision)
        except Exception as exc:  # noqa: BLE001 - observability only
            log.warning("could not publish the leader epoch: %s", exc)

    def _arm_for_primary(self, t: Timing, what: str) -> None:
        self._require_lease(t, what)
        if self.watchdog is not None:
            remaining_s = (self.lease.deadline or 0.0) - t.watchdog_safety_margin_s - self.clock.monotonic()
            timeout_s = float(max(1, math.floor(remaining_s)))
            if self.watchdog.armed:
                self.watchdog.keepalive(timeout_s)
            elif not self.watchdog.arm(timeout_s):
                raise RuntimeError("watchdog is required but could not be armed: not promoting")
        self.push_fence(t)

    @contextmanager
    def _keeping_lease(self, t: Timing) -> Iterator[None]:
        """Renew the leader key every ``loop_wait`` from another thread while a long step runs (initdb, a
        user's post_bootstrap script): the loop cannot cycle meanwhile, and the lease must not run out
        under a node doing legitimate work. Each renewal also moves the fence deadline. A lost key stops
        the renewals; the step's caller finds out at its next ``_require_lease``."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(t.loop_wait_s):
                try:
                    if not self._lease_call(self.dcs.renew_leader, t):
                        log.warning("lost the leader key during a long step")
                        return
                except DcsError as exc:
                    log.warning("cannot renew the leader key during a long step: %s", exc)

        keeper = threading.Thread(target=renew, name="lease-keeper", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def _Bootstrap(self, a: act.Bootstrap, i: Inputs, t: Timing) -> bool:
        """initdb, start, roles and post_bootstrap, then register the system identifier. The lease is
        renewed throughout; a failure after initdb moves the new data directory aside (never adopted later
        with missing roles), and gives the leader key and the initialize key back if still ours."""
        assert self.pg is not None
        try:
            with self._keeping_lease(t):
                self.pg.initdb()
            self._arm_for_primary(t, "start the new cluster")
            self.pg.start(None, None, as_replica=False, timeout_s=max(30.0, t.retry_timeout_s),
                          fence_deadline=self.fence_deadline(t))
            self._publish_epoch()
            with self._keeping_lease(t):
                sysid = self.pg.post_bootstrap()
            if not self._lease_call(self.dcs.renew_leader, t):
                raise RuntimeError("lost the leader key during bootstrap")
            self._arm_for_primary(t, "register the new cluster")
            self.dcs.set_initialize(sysid, timeout_s=t.retry_timeout_s)
        except Exception:
            self._abandon_bootstrap(t)
            raise
        self.pg.finish_bootstrap()
        return True

    def _abandon_bootstrap(self, t: Timing) -> None:
        assert self.pg is not None
        held = self.lease.deadline is not None
        try:
            self.pg.stop("immediate", 30)
            if self.pg.observe().data_dir not in (DataDir.MISSING, DataDir.EMPTY):
                log.warning("bootstrap failed: its data directory is kept at %s", self.pg.move_data_aside())
        finally:
            self.drop_lease()
            self.disarm_watchdog()
            if held:  # still ours: let another node (or our next cycle) bootstrap
                self.dcs.cancel_initialize(timeout_s=t.retry_timeout_s)
                self.dcs.release_leader(self.me.name, timeout_s=t.retry_timeout_s)

    def _StartPrimary(self, a: act.StartPrimary, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self._arm_for_primary(t, "start a primary")
        self._publish_epoch()
        self.pg.start(None, None, as_replica=False, timeout_s=max(10.0, t.retry_timeout_s),
                      fence_deadline=self.fence_deadline(t))
        return True

    def _Promote(self, a: act.Promote, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self._arm_for_primary(t, "promote")
        self._publish_epoch()
        self._require_lease(t, "promote")  # publishing took time: the lease must still hold
        self.pg.promote(timeout_s=max(10.0, t.retry_timeout_s))
        self.following = None
        # PostgreSQL spreads the end-of-recovery checkpoint out; until it completes, the control file
        # still names the old timeline and a pg_rewind from this server copies an inconsistent state.
        # Force it now: this member publishes role=primary only after it, and rewinders wait for that.
        fence = self.fence_deadline(t) or self.clock.monotonic()
        try:  # bounded: a long checkpoint must not hold the loop past its next renewal
            self.pg.checkpoint(timeout_s=max(1.0, min(10.0, fence - self.clock.monotonic() - t.loop_wait_s)))
        except Exception as exc:  # noqa: BLE001 - promoted regardless; the checkpoint goes on in the background
            log.warning("checkpoint after promotion failed: %s", exc)
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

    def _RepairReplica(self, a: act.RepairReplica, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.repaired = False
        if not self.pg.can_reach(a.conn_url):
            log.warning("cannot reach %s: not repairing a replica that may only be cut off from it", a.leader)
            return True  # nothing to do until it can be reached; the loop keeps its pace
        self.repaired = True
        self.pg.stop("fast", 60)
        if a.reclone:
            return self._Reinitialize(act.Reinitialize(a.leader, a.conn_url), i, t) and \
                self._StartReplica(act.StartReplica(a.leader, a.conn_url), i, t)
        return self._StartReplica(act.StartReplica(a.leader, a.conn_url, rewind=True), i, t)

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
        if primary:
            self._require_lease(t, "restart a primary")
        self.pg.restart(timeout_s=max(30.0, t.retry_timeout_s),
                        fence_deadline=self.fence_deadline(t) if primary else None)
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

    def _MoveDataAside(self, a: act.MoveDataAside, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        if self.pg.observe().postmaster_pid is not None:
            self.pg.stop("immediate", 30)
        log.warning("%s: data directory kept at %s", a.reason, self.pg.move_data_aside())
        return True

    def _FinishBootstrap(self, a: act.FinishBootstrap, i: Inputs, t: Timing) -> bool:
        assert self.pg is not None
        self.pg.finish_bootstrap()
        return True

    def _Refuse(self, a: act.Refuse, i: Inputs, t: Timing) -> bool:
        raise FatalRefusal(a.reason)
