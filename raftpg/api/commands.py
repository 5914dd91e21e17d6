"""``NodeCommands``: the ``Commands`` port over the DCS, the HA loop and the embedded Raft node.

Cluster operations (switchover, failover, config) write the DCS through ``raftpg.ha.operations`` in a
worker thread; the HA loops carry them out. Node operations (restart, reload, reinitialize) are queued on
this node's loop with ``request()``; waiting for their effect is an ``asyncio.sleep`` poll of the
published status, never a blocking call on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from raftpg.api.ports import Outcome
from raftpg.clock import Clock
from raftpg.consensus.api import KvError, KvRejected
from raftpg.dcs.base import Dcs, DcsError
from raftpg.ha import operations as ops
from raftpg.ha.inputs import REINITIALIZE_FROM_LEADER
from raftpg.ha.operations import OperationError, Refusal
from raftpg.model import NodeStatus

POLL_S = 0.05


class LoopControl(Protocol):
    """What the commands need of ``HaLoop``."""

    @property
    def status(self) -> NodeStatus: ...

    def request(self, what: str) -> None: ...

    def wake(self) -> None: ...

    def failsafe_request(self, primary: str, primary_is_me: bool) -> str | None: ...


class RaftMembership(Protocol):
    """What the commands need of ``RaftNode`` (None with an external DCS)."""

    def add_member(self, addr: str, timeout_s: float = ...) -> None: ...

    def remove_member(self, addr: str, timeout_s: float = ...) -> None: ...

    def transfer_leadership(self, addr: str | None, timeout_s: float = ...) -> str: ...


class NodeCommands:
    def __init__(self, *, dcs: Dcs, loop: LoopControl, clock: Clock, raft: RaftMembership | None = None,
                 reload_config: Callable[[], None] | None = None, timeout_s: float = 10.0,
                 switchover_wait_s: float = 30.0, restart_wait_s: float = 120.0) -> None:
        self.dcs, self.loop, self.clock, self.raft = dcs, loop, clock, raft
        self.reload_config = reload_config
        self.timeout_s = timeout_s
        self.switchover_wait_s = switchover_wait_s
        self.restart_wait_s = restart_wait_s

    # ------------------------------------------------------------------ cluster operations (DCS)
    async def switchover(self, leader: str | None, candidate: str | None,
                         scheduled_at: str | None) -> Outcome:
        requested = await asyncio.to_thread(
            ops.request_switchover, self.dcs, leader=leader, candidate=candidate, scheduled_at=scheduled_at,
            now_wall=self.clock.wall(), timeout_s=self.timeout_s)
        self.loop.wake()
        if requested.scheduled_at is not None:
            at = ops.iso_time(requested.scheduled_at)
            return Outcome(f"switchover from {requested.leader} scheduled at {at}", 202,
                           {"leader": requested.leader, "candidate": candidate, "scheduled_at": at})
        return await asyncio.to_thread(self._await_new_leader, requested.leader, "switchover")

    async def failover(self, candidate: str, force: bool) -> Outcome:
        await asyncio.to_thread(ops.request_failover, self.dcs, candidate=candidate, force=force,
                                timeout_s=self.timeout_s)
        self.loop.wake()
        view = await asyncio.to_thread(ops.load_view, self.dcs, self.timeout_s)
        return await asyncio.to_thread(self._await_new_leader, view.leader.name if view.leader else None,
                                       "failover")

    def _await_new_leader(self, old: str | None, what: str) -> Outcome:
        """Block (in a worker thread) until another member holds the leader key and runs as primary."""
        deadline = self.clock.monotonic() + self.switchover_wait_s
        while (remaining := deadline - self.clock.monotonic()) > 0:
            try:
                view = self.dcs.load(linearizable=True, timeout_s=min(self.timeout_s, remaining))
            except DcsError:
                view = None
            if view is not None:
                new = view.leader.name if view.leader else None
                member = view.leader_member
                if new and new != old and member and member.role == "primary" and member.is_running:
                    return Outcome(f"{what}: {new} is the new primary", 200, {"leader": new})
                if view.failover is None and new == old:
                    raise OperationError(f"{what} did not happen: the primary or the candidate refused "
                                         "it (the agents' logs say why)", Refusal.UNAVAILABLE)
                self.dcs.watch(view.revision, min(0.2, remaining))
            else:
                self.clock.sleep(min(0.2, max(0.0, remaining)))
        raise OperationError(f"{what} requested but not complete after {self.switchover_wait_s:.0f}s: "
                             "check raftpgctl list", Refusal.UNAVAILABLE)

    async def cancel_switchover(self) -> Outcome:
        cancelled = await asyncio.to_thread(ops.cancel_switchover, self.dcs, timeout_s=self.timeout_s)
        self.loop.wake()
        return Outcome("pending switchover cancelled", 200,
                       {"leader": cancelled.leader, "candidate": cancelled.candidate})

    async def remove_cluster(self, leader: str | None) -> Outcome:
        await asyncio.to_thread(ops.remove_cluster, self.dcs, leader, timeout_s=self.timeout_s)
        self.loop.wake()
        return Outcome("removed every key of the cluster from the DCS", 200)

    async def patch_config(self, patch: dict[str, Any]) -> Outcome:
        changed = await asyncio.to_thread(ops.patch_config, self.dcs, patch, timeout_s=self.timeout_s)
        self.loop.wake()
        return Outcome("config changed" if changed.changed else "config unchanged", 200,
                       {"config": changed.config, "warnings": list(changed.warnings)})

    async def put_config(self, document: dict[str, Any]) -> Outcome:
        changed = await asyncio.to_thread(ops.put_config, self.dcs, document, timeout_s=self.timeout_s)
        self.loop.wake()
        return Outcome("config replaced" if changed.changed else "config unchanged", 200,
                       {"config": changed.config, "warnings": list(changed.warnings)})

    # ------------------------------------------------------------------ this node (HA loop requests)
    def _data_node(self) -> NodeStatus:
        status = self.loop.status
        if status.witness:
            raise OperationError("this node is a witness: it has no PostgreSQL", Refusal.REFUSED)
        return status

    async def restart(self, timeout_s: float | None = None) -> Outcome:
        before = self._data_node()
        old_pid = before.local.postmaster_pid if before.local else None
        self.loop.request("restart")
        clock = asyncio.get_running_loop()
        wait_s = self.restart_wait_s if timeout_s is None else timeout_s
        deadline = clock.time() + wait_s
        while clock.time() < deadline:
            await asyncio.sleep(POLL_S)
            now = self.loop.status
            done_cycles = now.cycles - before.cycles
            if now.local and now.local.running and done_cycles >= 1 and (
                    now.local.postmaster_pid != old_pid if old_pid is not None else done_cycles >= 2):
                return Outcome("PostgreSQL restarted", 200)
        raise OperationError(f"restart failed: PostgreSQL not running again after {wait_s:g}s", Refusal.UNAVAILABLE)

    async def failsafe(self, primary: str, primary_is_me: bool) -> str | None:
        return self.loop.failsafe_request(primary, primary_is_me)

    async def reload(self) -> Outcome:
        if self.reload_config is not None:
            await asyncio.to_thread(self.reload_config)
        if not self.loop.status.witness:
            self.loop.request("reload")
        else:
            self.loop.wake()
        return Outcome("reload requested", 202)

    async def reinitialize(self, force: bool, from_leader: bool = False) -> Outcome:
        status = self._data_node()
        if status.holds_leader_key:
            raise OperationError("this node holds the leader key: the primary cannot be reinitialized", Refusal.REFUSED)
        if status.view is None or status.view.leader is None:
            raise OperationError("no primary to clone from: reinitialize needs a running leader", Refusal.REFUSED)
        # without from_leader the HA loop prefers a running clonefrom-tagged member (Patroni's rule);
        # with it, the leader, whatever the tags say
        source = status.view.clone_source(status.name, from_leader)
        self.loop.request(REINITIALIZE_FROM_LEADER if from_leader else "reinitialize")
        return Outcome(f"reinitialize from {source.name if source else status.view.leader.name} requested", 202)

    # ------------------------------------------------------------------ Raft membership
    def _membership(self) -> RaftMembership:
        if self.raft is None:
            raise OperationError("this node does not use the embedded Raft store", Refusal.UNKNOWN)
        return self.raft

    async def _raft_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, self.timeout_s)
        except KvRejected as exc:
            raise OperationError(str(exc), Refusal.INVALID) from exc
        except KvError as exc:
            raise OperationError(f"the Raft cluster did not accept the change: {exc}", Refusal.UNAVAILABLE) from exc

    async def add_raft_member(self, addr: str) -> Outcome:
        await self._raft_call(self._membership().add_member, addr)
        return Outcome(f"{addr} added to the Raft cluster", 200, {"addr": addr})

    async def remove_raft_member(self, addr: str) -> Outcome:
        await self._raft_call(self._membership().remove_member, addr)
        return Outcome(f"{addr} removed from the Raft cluster", 200, {"addr": addr})

    async def transfer_raft_leadership(self, addr: str | None) -> Outcome:
        leader = await self._raft_call(self._membership().transfer_leadership, addr)
        return Outcome(f"Raft leadership transferred to {leader}", 200, {"leader": leader})
