"""Lease countdowns of the replicated KV, on each node's own monotonic clock (consensus/DESIGN.md, *Leases*)."""

from __future__ import annotations

from raftpg.kv import Command, KvState, expire_command

REPROPOSE_AFTER_S = 1.0  # an expiry proposed but not applied by then may have been lost: propose it again


class LeaseClock:
    """Lease countdowns on this node's monotonic clock. Not replicated.

    Every node calls ``observe(state, now)`` right after applying commands, in every role: a refresh
    (identified by ``KeyValue.refreshed``) seen for the first time starts its countdown at ``now``, which
    is at or after the moment this node applied it, hence after its holder sent it. Only the Raft leader
    calls ``due(state, now)``, which returns expire commands for refreshes it has seen at least ``ttl_s``
    ago. A newly elected leader keeps the countdowns it started as a follower: each started no earlier
    than the refresh was applied here, so a lease still never expires before ``ttl_s`` after its holder
    sent the refresh (the holder counts from there, safety rule 2), and failover does not also wait for
    the election. ``reset()`` forgets everything (a restarted node starts every countdown afresh).
    """

    def __init__(self) -> None:
        self._started: dict[tuple[str, int], float] = {}
        self._proposed: dict[tuple[str, int], float] = {}

    def reset(self) -> None:
        self._started.clear()
        self._proposed.clear()

    def observe(self, state: KvState, now: float) -> None:
        """Start countdowns for refreshes not seen yet and forget those superseded or gone."""
        live = {}
        for kv in state.keys.values():
            if kv.ttl_s is not None:
                ident = (kv.key, kv.refreshed)
                live[ident] = self._started.get(ident, now)
        self._started = live
        self._proposed = {k: v for k, v in self._proposed.items() if k in live}

    def forget_proposals(self) -> None:
        """A new term: expiries proposed earlier may have been dropped with the old leader's log."""
        self._proposed.clear()

    def due(self, state: KvState, now: float, repropose_after_s: float = REPROPOSE_AFTER_S) -> list[Command]:
        live: dict[tuple[str, int], float] = {}
        commands = []
        for kv in state.keys.values():
            if kv.ttl_s is None:
                continue
            ident = (kv.key, kv.refreshed)
            started = self._started.get(ident, now)
            live[ident] = started
            if now - started >= kv.ttl_s:
                proposed = self._proposed.get(ident)
                if proposed is None or now - proposed >= repropose_after_s:
                    self._proposed[ident] = now
                    commands.append(expire_command(kv.key, kv.refreshed, now))
        self._started = live
        self._proposed = {k: v for k, v in self._proposed.items() if k in live}
        return commands

    def next_due_s(self, state: KvState, now: float, repropose_after_s: float = REPROPOSE_AFTER_S) -> float | None:
        """Seconds from ``now`` until :meth:`due` next has something to propose (0 or less: already),
        None if no key has a lease. Lets the leader's tick thread sleep until then (tickwait.py)."""
        soonest: float | None = None
        for kv in state.keys.values():
            if kv.ttl_s is None:
                continue
            ident = (kv.key, kv.refreshed)
            at = self._started.get(ident, now) + kv.ttl_s
            proposed = self._proposed.get(ident)
            if proposed is not None:
                at = max(at, proposed + repropose_after_s)
            if soonest is None or at < soonest:
                soonest = at
        return None if soonest is None else soonest - now
