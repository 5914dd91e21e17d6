"""The lease account (safety rules 1, 2 and 6): how long this node may act as the primary, and the two
enforcers that stop it when it may not (the fencing supervisor and the watchdog).

- A lease counts from the moment an acquire or renew was *sent* and lasts ``ttl``; only a confirmed
  answer extends it. The Raft leader (or etcd) expires the key no earlier than that.
- The supervisor gets an absolute deadline, ``fence_margin`` before the lease ends; re-sending it never
  extends it. The watchdog is kicked only after a confirmed renewal, to fire ``safety_margin`` before
  that renewal's lease ends.
- Irreversible steps call ``require`` right before they run, so a freeze or a slow step between the
  decision and the action never lets a primary start on an expiring lease.
- ``keeping()`` renews from a thread of its own while one long step runs (initdb, a user's
  post_bootstrap): the loop cannot cycle meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from raftpg.clock import Clock
from raftpg.dcs.base import DcsError
from raftpg.ha.inputs import LeaseState
from raftpg.ha.ports import PostgresPort, WatchdogPort

log = logging.getLogger(__name__)

# How long past its deadline the fencing supervisor may let PostgreSQL accept writes: it checks the
# deadline every 50 ms, then SIGKILLs the postmaster's group if SIGQUIT has not ended it within 1 s
# (raftpg/pg/supervisor.py POLL_S + KILL_AFTER_S; tests/scenarios/test_fencing.py ties the two).
SUPERVISOR_FENCE_LATENCY_S = 1.05
STOP_LEAD_S = 0.25  # a demotion starts this long before writes must have stopped (measured: ~10 ms)


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
        like a watchdog armed with ttl - safety_margin, so that writes have stopped by ttl - safety_margin
        after the last renewal (``STOP_LEAD_S`` earlier: a fast stop takes that long to refuse writes;
        the margin is capped at half the TTL so a short TTL still rides out one failed renewal)."""
        return max(self.fence_margin_s + min(1.0, self.loop_wait_s),
                   min(self.watchdog_safety_margin_s, self.ttl_s / 2) + STOP_LEAD_S)


LeaderCall = Callable[..., Any]  # dcs.acquire_leader / dcs.renew_leader: (name, ttl_s, *, timeout_s) -> Leader


class LeaseAccount:
    """One node's lease and its enforcers. Thread-safe: ``keeping()`` renews from its own thread."""

    def __init__(self, name: str, pg: PostgresPort | None, watchdog: WatchdogPort | None, clock: Clock) -> None:
        self.name, self.pg, self.watchdog, self.clock = name, pg, watchdog, clock
        self.state = LeaseState()
        self.leader_revision: int | None = None  # the leader key's revision at the last acquire/renew
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- the account
    def call(self, fn: LeaderCall, timing: Timing, reserve_s: float = 0.0) -> bool:
        """Acquire or renew (``fn``); on a confirmed answer the lease is ``sent + ttl`` and both enforcers
        learn it; on a refusal the lease is gone. A DcsError leaves the lease as it was (it runs out). The
        call gives up ``reserve_s`` before the demotion point at the latest (failsafe_mode's round)."""
        with self._lock:
            sent = self.clock.monotonic()
            budget = self.state.budget(timing.retry_timeout_s, sent + reserve_s, timing.demote_margin_s)
            leader = fn(self.name, timing.ttl_s, timeout_s=budget)
            if not leader:
                self.state = LeaseState()
                return False
            self.state = LeaseState(sent + timing.ttl_s)
            self.leader_revision = getattr(leader, "revision", None)
            self.push_fence(timing)
            self._kick_watchdog(timing)
            return True

    def confirm(self, sent: float, timing: Timing) -> None:
        """failsafe_mode: every member accepted this node as the primary in requests sent at ``sent``
        (they hold back from the race for ttl after receiving one): a lease as a confirmed renewal gives."""
        with self._lock:
            self.state = LeaseState(max(self.state.deadline or sent, sent + timing.ttl_s))
            self.push_fence(timing)
            self._kick_watchdog(timing)

    def drop(self) -> None:
        with self._lock:
            self.state = LeaseState()

    def valid(self) -> bool:
        return self.state.valid_for(self.clock.monotonic()) > 0

    def require(self, timing: Timing, what: str) -> None:
        """Immediately before an irreversible step: the lease must be good for longer than the demotion
        margin, or the step is refused (RuntimeError naming it)."""
        deadline, now = self.state.deadline, self.clock.monotonic()
        if deadline is None:
            raise RuntimeError(f"no leader lease: refusing to {what}")
        if deadline - now <= timing.demote_margin_s:
            raise RuntimeError(f"the leader lease ends in {max(0.0, deadline - now):.1f}s: refusing to {what}")

    # ----------------------------------------------------------------- the fencing supervisor
    def fence_deadline(self, timing: Timing) -> float | None:
        """The absolute moment (monotonic) writes must stop: the lease's end minus the fence margin."""
        deadline = self.state.deadline
        return None if deadline is None else deadline - timing.fence_margin_s

    def push_fence(self, timing: Timing) -> None:
        deadline = self.fence_deadline(timing)
        if self.pg is not None and deadline is not None:
            self.pg.fence_at(deadline)

    # ----------------------------------------------------------------- the watchdog
    def _watchdog_timeout_s(self, timing: Timing) -> float:
        remaining_s = (self.state.deadline or 0.0) - timing.watchdog_safety_margin_s - self.clock.monotonic()
        return float(max(1, math.floor(remaining_s)))

    def _kick_watchdog(self, timing: Timing) -> None:
        """Only after a confirmed renewal, and only as far as it allows (whole seconds, rounded down)."""
        if self.watchdog is None or not self.watchdog.armed or self.state.deadline is None:
            return
        remaining_s = self.state.deadline - timing.watchdog_safety_margin_s - self.clock.monotonic()
        if remaining_s >= 1.0:
            self.watchdog.keepalive(float(math.floor(remaining_s)))

    def arm_for_primary(self, timing: Timing, what: str) -> None:
        """Before PostgreSQL may accept writes: a good lease, the watchdog armed (``required`` mode refuses
        to go on without it), and the supervisor's deadline sent."""
        self.require(timing, what)
        if self.watchdog is not None:
            if self.watchdog.armed:
                self.watchdog.keepalive(self._watchdog_timeout_s(timing))
            elif not self.watchdog.arm(self._watchdog_timeout_s(timing)):
                raise RuntimeError("watchdog is required but could not be armed: not promoting")
        self.push_fence(timing)

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

    # ----------------------------------------------------------------- long steps
    @contextmanager
    def keeping(self, renew: LeaderCall, timing: Timing) -> Iterator[None]:
        """Renew every ``loop_wait`` from another thread while the ``with`` body runs. A lost key stops
        the renewals; the caller finds out at its next ``require``."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(timing.loop_wait_s):
                try:
                    if not self.call(renew, timing):
                        log.warning("lost the leader key during a long step")
                        return
                except DcsError as exc:
                    log.warning("cannot renew the leader key during a long step: %s", exc)

        keeper = threading.Thread(target=run, name="lease-keeper", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()
