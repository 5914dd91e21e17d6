"""What every fault shares: ``Step`` (one planned occurrence), ``Env`` (what a fault may touch), ``Fault``
(``start`` / ``verify`` / ``stop``, with class-level metadata the schedule and the runner read) and
``FaultError`` (a fault that could not be started: logged as "not started", the run goes on).

Metadata on a ``Fault`` class:

- ``kinds``: the cluster kinds it applies to (``raftpg``: agents + PostgreSQL; ``kv``: Raft KV drivers);
- ``mutant``: a fault that defeats raftpg's protection from outside; never in ``all``, must be caught;
- ``exclusive``: touches the whole cluster (restart it, switch it over...): never overlapped with another;
- ``needs``: what the cluster must be started with (``faketime``: libfaketime clocks; ``smallfs``: data on
  size-limited filesystems; ``etcd``: the etcd backend). The runner reads it to set up the cluster.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from jepsen_lite.cluster import RaftpgCluster

if TYPE_CHECKING:
    from jepsen_lite.cluster import NodeProcesses
    from jepsen_lite.topology import Topology


class FaultError(RuntimeError):
    """A fault could not be started (e.g. no primary to isolate): logged, the run goes on."""


@dataclass(frozen=True)
class Step:
    """One planned fault. ``overlap``: faults started while this one holds (``offset_s`` after it), stopped
    before it (``--overlap K``)."""

    index: int
    fault: str
    hold_s: float
    quiet_s: float
    params: dict[str, Any] = field(default_factory=dict)
    offset_s: float = 0.0
    overlap: tuple[Step, ...] = ()


@dataclass
class Env:
    topology: Topology
    cluster: NodeProcesses
    ttl_s: float
    loop_wait_s: float
    rng: random.Random
    say: Callable[[str], None] = lambda _msg: None
    workload: Any = None  # the running Workload (faults that write, e.g. exhaust-connections), if any


class Fault:
    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset({"raftpg", "kv"})
    mutant: ClassVar[bool] = False
    exclusive: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()
    data_only: ClassVar[bool] = False  # "random" targets only nodes with PostgreSQL

    def __init__(self, env: Env, step: Step) -> None:
        self.env = env
        self.step = step
        self.params = dict(step.params)

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        """(hold_s, params) for one occurrence."""
        return rng.uniform(0.5 * ttl_s, 1.5 * ttl_s), {}

    def start(self) -> dict[str, Any]:
        raise NotImplementedError

    def verify(self) -> tuple[bool, dict[str, Any]]:
        return True, {}

    def stop(self) -> dict[str, Any]:
        return {}

    # target helpers
    def pick_victim(self, default: str = "random") -> str:
        """The node this occurrence hits: its ``target`` parameter (a role or "random"), else ``default``;
        kept as ``self.victim``."""
        self.victim: str = self.resolve(self.params.get("target", default))
        return self.victim

    @staticmethod
    def running(pid: int | None, problem: str) -> int:
        """``pid``, or FaultError(``problem``) when the process to fault is not there."""
        if pid is None:
            raise FaultError(problem)
        return pid

    @property
    def cluster(self) -> NodeProcesses:
        return self.env.cluster

    @property
    def pg_cluster(self) -> RaftpgCluster:
        cluster = self.env.cluster
        if not isinstance(cluster, RaftpgCluster):
            raise FaultError(f"{self.name} needs a raftpg cluster")
        return cluster

    def resolve(self, role: str) -> str:
        cluster, rng = self.env.cluster, self.env.rng
        if role == "primary" and isinstance(cluster, RaftpgCluster):
            found = cluster.primary()
            if found is None:
                raise FaultError("no single primary to target")
            return found
        if role in ("leader", "primary"):  # the KV cluster has no PostgreSQL primary: its Raft leader
            found = cluster.raft_leader()
            if found is None:
                raise FaultError("no Raft leader to target")
            return found
        if role == "replica":
            primary = cluster.primary() if isinstance(cluster, RaftpgCluster) else cluster.raft_leader()
            others = [n for n in cluster.data_names if n != primary]
            if not others:
                raise FaultError("no replica to target")
            return rng.choice(others)
        if role == "data" or (role == "random" and self.data_only):
            return rng.choice(cluster.data_names)
        return rng.choice(cluster.names)


def draw_role(rng: random.Random) -> str:
    return rng.choice(["primary", "primary", "replica", "random"])
