"""An in-memory stand-in for :class:`RaftNode`: same client API, one process, a clock you move.

For unit tests and scenario simulations. Leases expire only when ``expire_due()`` is called, using the
injected clock as "the Raft leader's monotonic clock"; ``reachable = False`` simulates a node cut off
from the quorum (every call raises :class:`NoQuorum`).
"""

from __future__ import annotations

from raftpg.clock import Clock
from raftpg.consensus.api import KvRejected, NoQuorum, RaftStatus
from raftpg.consensus.leases import LeaseClock
from raftpg.consensus.state import GuardedState, unwrap
from raftpg.kv import (
    Command,
    Committed,
    Conflict,
    Guard,
    KeyValue,
    delete_command,
    put_command,
    touch_command,
    validate_key_value,
)


class MemoryKv:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._state = GuardedState()
        self._leases = LeaseClock()
        self.reachable = True

    def _check(self) -> None:
        if not self.reachable:
            raise NoQuorum("no quorum (simulated)")

    def _submit(self, command: Command) -> Committed | Conflict:
        self._check()
        result = self._state.apply(command)
        self._leases.observe(self._state.locked_state(), self._clock.monotonic())
        return unwrap(result)

    def put(self, key: str, value: str, *, guard: Guard | None = None, ttl_s: float | None = None,
            timeout_s: float = 5.0) -> Committed | Conflict:
        problem = validate_key_value(key, value)
        if problem:
            raise KvRejected(problem)
        return self._submit(put_command(key, value, guard=guard, ttl_s=ttl_s))

    def touch(self, key: str, *, guard: Guard | None = None, timeout_s: float = 5.0) -> Committed | Conflict:
        return self._submit(touch_command(key, guard=guard))

    def delete(self, key: str, *, guard: Guard | None = None, timeout_s: float = 5.0) -> Committed | Conflict:
        return self._submit(delete_command(key, guard=guard))

    def get(self, key: str, *, linearizable: bool = False, timeout_s: float = 5.0) -> KeyValue | None:
        if linearizable:
            self._check()
        return self._state.get(key)

    def range(self, prefix: str, *, linearizable: bool = False,
              timeout_s: float = 5.0) -> tuple[int, list[KeyValue]]:
        if linearizable:
            self._check()
        return self._state.range(prefix)

    def watch(self, prefix: str, after_revision: int, timeout_s: float,
              ignore: tuple[str, ...] = ()) -> int | None:
        return self._state.watch(prefix, after_revision, timeout_s, ignore)

    def expire_due(self) -> list[str]:
        """Play the Raft leader: expire leases whose TTL passed on the clock; return expired keys."""
        expired = []
        for command in self._leases.due(self._state.locked_state(), self._clock.monotonic()):
            if isinstance(self._state.apply(command), Committed):
                expired.append(command["key"])
        return expired

    def new_leader(self) -> None:
        """Simulate a Raft leader change to a node that had seen none of the refreshes (the most
        conservative case, e.g. a freshly restarted node): every lease countdown restarts now. A RaftNode
        that applied the refreshes as a follower keeps its earlier (still safe) start times."""
        self._leases.reset()
        self._leases.observe(self._state.locked_state(), self._clock.monotonic())

    def status(self) -> RaftStatus:
        return RaftStatus(self_addr="memory", state="leader", term=1, leader="memory", commit_index=0,
                          last_applied=0, has_quorum=self.reachable, peers=(), revision=self._state.revision,
                          ready=True)

    def close(self) -> None:
        pass
