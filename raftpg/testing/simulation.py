"""A deterministic simulation of a raftpg cluster: real HA loops, fake everything else, seeded.

N :class:`raftpg.ha.loop.HaLoop` instances run their real ``cycle()`` (decide + execute + publish) over
one shared in-memory KV (``MemoryKv`` through the real ``KvDcs``), one :class:`FakeClock` and
:class:`FakePostgres` instances on a shared :class:`PgNetwork`. Nothing sleeps: the simulation moves the
clock from event to event. Each node cycles ``loop_wait`` after its last cycle, sooner when its lease
needs renewing (as ``HaLoop._wait`` does), 0.2 s after a failed action, and at once when a key that
matters (initialize, leader, failover, config, sync, history) changes, as the loop's watch does.
Every step plays the Raft leader (``kv.expire_due()``) and lets replicas catch up.

Faults are data: a partitioned node's DCS calls raise ``DcsError`` and its replication links are down;
PostgreSQL can be killed, the agent killed or frozen, a data directory wiped.

The checker runs continuously: whenever a FakePostgres becomes a primary, and after every step, at most
one instance may be accepting writes (a running primary whose fencing deadline has not passed). A
violation raises :class:`SafetyViolation` at once, carrying the recent event log.

Determinism: the only randomness is ``random.Random(seed)`` (the order of nodes due at the same instant
and a small jitter on their waits), so a seed replays a run exactly.

Time passes inside an action only when a fault says so (slow DCS calls, slow PostgreSQL operations);
then the other nodes keep cycling until the call returns (recursively: a node mid-call waits for its
own call). Not modelled: every node reads the
same linearizable store, there is no Raft of our own here (``kv.new_leader()`` stands for a leader
change); the one clock never drifts between nodes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from raftpg.clock import FakeClock
from raftpg.consensus.memory import MemoryKv
from raftpg.dcs import keys
from raftpg.dcs.codec import failover_document
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha.actions import Action, Decision
from raftpg.ha.execute import Executor, FatalRefusal
from raftpg.ha.inputs import Inputs, Me
from raftpg.ha.lease import Timing
from raftpg.ha.loop import HaLoop
from raftpg.model import ClusterView, Failover, Tags
from raftpg.pg import supervisor
from raftpg.testing.fake_postgres import FakePostgres, PgNetwork, host_of
from raftpg.testing.sim_faults import CuttableDcs, FailOnce
from raftpg.testing.sim_peers import SimPeers

__all__ = ["DEFAULT_DCS_CONFIG", "FailOnce", "SafetyViolation", "Simulation"]

DEFAULT_DCS_CONFIG: dict[str, Any] = {
    "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
    "postgresql": {"use_pg_rewind": True, "use_slots": True},
}
# The fencing supervisor's worst case: it polls every POLL_S and SIGKILLs KILL_AFTER_S after SIGQUIT;
# until then the old primary may still accept writes.
FENCE_LATENCY_S = supervisor.POLL_S + supervisor.KILL_AFTER_S
WATCHED_KEYS = (keys.INITIALIZE, keys.LEADER, keys.FAILOVER, keys.CONFIG, keys.SYNC, keys.HISTORY)


class SafetyViolation(AssertionError):
    """Two primaries accepted writes at the same simulated instant."""


@dataclass
class SimNode:
    name: str
    me: Me
    dcs: CuttableDcs
    pg: FakePostgres | None
    loop: HaLoop
    next_cycle_at: float = 0.0
    agent_alive: bool = True
    frozen: bool = False
    fatal: str | None = None
    seen: tuple[tuple[str, str], ...] = ()  # the watched keys' values at the last cycle
    last_line: str = ""
    decisions: list[tuple[float, Decision]] = field(default_factory=list)
    fail_once: FailOnce | None = None
    pending: tuple[Decision, Any, Any] | None = None   # decided, not yet carried out (freeze_before)
    frozen_before_done: bool = True

    @property
    def active(self) -> bool:
        return self.agent_alive and not self.frozen and self.fatal is None


def _intercept(executor: Executor, run: Callable[[Decision, Inputs, Timing], bool]) -> None:
    """Fault injection: ``run`` stands in for this executor's own ``run`` (an instance attribute, which
    shadows the method; other executors are untouched). ``run`` calls the original as it sees fit."""
    vars(executor)["run"] = run


class Simulation:
    def __init__(self, seed: int = 0, *, dcs_config: dict[str, Any] | None = None,
                 fence_latency_s: float = FENCE_LATENCY_S, tick_s: float = 0.5, jitter_s: float = 0.05) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = FakeClock()
        self.started_at = self.clock.monotonic()
        self.kv = MemoryKv(self.clock)
        self.layout = KeyLayout("/service/", "sim")
        self.operator = memory_dcs(self.clock, self.layout, self.kv)
        self.network: PgNetwork[FakePostgres] = PgNetwork(self.clock)
        self.network.on_writable = lambda pg: self.check_writers(f"{pg.name} became a primary")
        self.network.on_take_time = self._take_time
        self.dcs_config = json.loads(json.dumps(dcs_config or DEFAULT_DCS_CONFIG))
        self.fence_latency_s, self.tick_s, self.jitter_s = fence_latency_s, tick_s, jitter_s
        self.nodes: dict[str, SimNode] = {}
        self._busy: list[str] = []  # nodes in the middle of a cycle (a slow call in flight)
        self.log: list[str] = []
        self.max_writers = 0

    # ------------------------------------------------------------------ building
    @property
    def now(self) -> float:
        return self.clock.monotonic()

    @property
    def elapsed(self) -> float:
        return self.now - self.started_at

    def add_node(self, name: str, *, witness: bool = False, tags: Tags | None = None,
                 delay_s: float = 0.0) -> SimNode:
        me = Me(name=name, witness=witness, tags=tags or Tags(), api_url=f"http://{name}:8008/patroni",
                conn_url=None if witness else f"postgresql://{name}:5432/postgres", raft_addr=f"{name}:5010")
        pg = None if witness else FakePostgres(name, self.network, self.clock,
                                               fence_latency_s=self.fence_latency_s)
        dcs = CuttableDcs(memory_dcs(self.clock, self.layout, self.kv), self.rng, self.network.take_time)
        node = SimNode(name, me, dcs, pg, self._new_loop(me, dcs, pg),
                       next_cycle_at=self.now + delay_s + self.rng.uniform(0, 1.0))
        self.nodes[name] = node
        self.note(f"{name}: agent started{' (witness)' if witness else ''}")
        return node

    def _new_loop(self, me: Me, dcs: CuttableDcs, pg: FakePostgres | None) -> HaLoop:
        return HaLoop(dcs=dcs, pg=pg, watchdog=None, clock=self.clock, me=me, version="sim",
                      bootstrap_dcs=json.loads(json.dumps(self.dcs_config)), position_peers=SimPeers(self, me.name))

    def node(self, name: str) -> SimNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} (nodes: {', '.join(sorted(self.nodes))})") from None

    def pg(self, name: str) -> FakePostgres:
        pg = self.node(name).pg
        if pg is None:
            raise KeyError(f"{name} is a witness: it has no PostgreSQL")
        return pg

    def note(self, text: str) -> None:
        self.log.append(f"{self.elapsed:8.2f} {text}")

    # ------------------------------------------------------------------ running
    def run(self, seconds: float) -> None:
        self._advance_until(self.now + seconds)

    def _take_time(self, seconds: float) -> None:
        """Time passes inside one node's call (a slow DCS call or PostgreSQL operation): the other nodes
        keep cycling meanwhile, as they would on their own machines; nodes already mid-call wait."""
        self._advance_until(self.now + seconds)

    def _may_cycle(self, node: SimNode) -> bool:
        return node.active and node.name not in self._busy

    def _advance_until(self, end: float) -> None:
        for _ in range(1_000_000):
            self._settle()
            if self.now > end + 1e-9:
                return  # time passed inside a nested slow call: we overshot
            due = [n for n in self.nodes.values() if self._may_cycle(n) and n.next_cycle_at <= self.now + 1e-9]
            if due:
                self.rng.shuffle(due)
                for node in due:
                    if self._may_cycle(node) and node.next_cycle_at <= self.now + 1e-9:
                        self._cycle(node)
                        self._settle()
                continue
            if self.now >= end - 1e-9:
                return
            upcoming = [n.next_cycle_at for n in self.nodes.values() if self._may_cycle(n)]
            self.clock.advance(max(0.0, min([*upcoming, self.now + self.tick_s, end]) - self.now))
        raise RuntimeError("simulation did not make progress (a node cycles without waiting?)")

    def _settle(self) -> None:
        for key in self.kv.expire_due():
            self.note(f"store: lease of {self.layout.relative(key)} expired")
        self.network.step()
        self.check_writers("step")
        seen = self._watched()
        for node in self.nodes.values():
            if node.active and not node.dcs.cut and node.seen != seen and node.next_cycle_at > self.now + 0.01:
                node.next_cycle_at = self.now + 0.01 + self.rng.uniform(0, self.jitter_s)

    def _watched(self) -> tuple[tuple[str, str], ...]:
        return tuple((kv.key, kv.value) for kv in (self.kv.get(self.layout.key(k)) for k in WATCHED_KEYS) if kv)

    def _cycle(self, node: SimNode) -> None:
        self._busy.append(node.name)
        try:
            decision = node.loop.cycle()
        except FatalRefusal as exc:
            node.fatal = str(exc)
            self.note(f"{node.name}: agent refused to continue: {exc}")
            return
        finally:
            self._busy.remove(node.name)
        ok = node.loop.status.error is None
        node.decisions.append((self.elapsed, decision))
        names = ", ".join(_describe(a) for a in decision.actions)
        line = f"{node.name}: {decision.reason}" + (f" [{names}]" if names else "") \
            + ("" if ok else f" FAILED: {node.loop.status.error}")
        if line != node.last_line:  # a steady state is logged once
            self.note(line)
        node.last_line = line
        node.seen = () if node.dcs.cut else self._watched()
        node.next_cycle_at = self.now + self._wait_s(node, ok) + self.rng.uniform(0, self.jitter_s)

    def _wait_s(self, node: SimNode, ok: bool) -> float:
        decision = node.decisions[-1][1] if node.decisions else Decision((), "")
        return node.loop.next_wake_s(decision, ok)

    # ------------------------------------------------------------------ the checker
    def check_writers(self, context: str) -> None:
        writers = sorted(pg.name for pg in self.network.writable())
        self.max_writers = max(self.max_writers, len(writers))
        if len(writers) > 1:
            self.note(f"SAFETY VIOLATION: {' and '.join(writers)} both accept writes ({context})")
            raise SafetyViolation(f"two primaries accept writes at t={self.elapsed:.2f}: {writers} "
                                  f"(seed {self.seed})\n" + self.tail())

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log[-lines:])

    # ------------------------------------------------------------------ faults
    def kill_pg(self, name: str) -> None:
        self.pg(name).crash()
        self.note(f"{name}: PostgreSQL killed")

    def kill_agent(self, name: str) -> None:
        """The agent dies: the fencing supervisor sees its stdin close and stops PostgreSQL at once."""
        node = self.node(name)
        node.agent_alive = False
        if node.pg is not None:
            node.pg.crash()
        self.note(f"{name}: agent killed (PostgreSQL fenced by the supervisor)")

    def start_agent(self, name: str) -> None:
        node = self.node(name)
        node.loop = self._new_loop(node.me, node.dcs, node.pg)
        node.agent_alive, node.frozen, node.fatal = True, False, None
        node.next_cycle_at = self.now
        self.note(f"{name}: agent started")

    def freeze(self, name: str) -> None:
        """SIGSTOP the agent: PostgreSQL keeps running until its fencing deadline passes."""
        self.node(name).frozen = True
        self.note(f"{name}: agent frozen")

    def thaw(self, name: str) -> None:
        node = self.node(name)
        node.frozen = False
        node.next_cycle_at = self.now
        self.note(f"{name}: agent thawed")
        if node.pending is not None:  # it froze between deciding and acting: it acts now
            decision, inputs, timing = node.pending
            node.pending = None
            ok = node.loop.executor.run(decision, inputs, timing)
            self.note(f"{name}: carried out its old decision [{', '.join(_describe(a) for a in decision.actions)}]"
                      + ("" if ok else f" FAILED: {node.loop.executor.last_error}"))

    def blind(self, name: str, blind: bool = True) -> None:
        """The agent can no longer query its PostgreSQL (every connection slot taken, an I/O stall past
        the statement timeout); the server itself keeps running and accepting writes on open sessions."""
        self.pg(name).unobservable = blind
        self.note(f"{name}: PostgreSQL {'no longer answers' if blind else 'answers'} the agent's queries")

    def stick(self, name: str, kind: str = "soft") -> None:
        """The replica's wal receiver can no longer stream (diverged WAL, a broken receiver): ``soft`` is
        cured by a rewind and restart, ``hard`` only by a fresh clone."""
        self.pg(name).stuck = kind
        self.note(f"{name}: replication stuck ({kind})")

    def wipe(self, name: str) -> None:
        self.pg(name).wipe()
        self.note(f"{name}: data directory wiped")

    def flaky_dcs(self, name: str, probability: float) -> None:
        self.node(name).dcs.flaky = probability
        self.note(f"{name}: {probability:.0%} of DCS answers lost" if probability else f"{name}: DCS answers reliable")

    def slow_dcs(self, name: str, seconds: float) -> None:
        """Each way of every DCS call from ``name`` now takes ``seconds`` of simulated time."""
        self.node(name).dcs.latency_s = seconds
        self.note(f"{name}: DCS calls take {seconds:g}s each way")

    def slow_pg(self, name: str, seconds: float) -> None:
        """Every PostgreSQL operation on ``name`` now takes ``seconds`` of simulated time."""
        self.pg(name).operation_s = seconds
        self.note(f"{name}: PostgreSQL operations take {seconds:g}s")

    def partition(self, name: str) -> None:
        self.node(name).dcs.cut = True
        self.network.cut.add(name)
        self.note(f"{name}: partitioned (no DCS quorum, replication links down)")

    def cut_link(self, a: str, b: str) -> None:
        self.network.cut_links.add(frozenset((a, b)))
        self.note(f"replication link {a} <-> {b} cut")

    def heal(self, *names: str) -> None:
        for name in names or tuple(self.nodes):
            self.node(name).dcs.cut = False
            self.network.cut.discard(name)
            self.network.cut_links = {link for link in self.network.cut_links if name not in link}
        self.note(f"healed {', '.join(names) if names else 'everything'}")

    def freeze_before(self, name: str, action: str) -> None:
        """The agent of ``name`` freezes between deciding and acting, in its next decision that contains an
        action named ``action``: the decision is kept, and carried out when ``thaw`` is called, with the
        inputs it was made on (as a SIGSTOPped process would resume)."""
        node = self.node(name)
        executor = node.loop.executor
        original = executor.run

        def run(decision: Decision, inputs: Inputs, timing: Timing) -> bool:
            if node.pending is None and not node.frozen_before_done and \
                    any(type(a).__name__ == action for a in decision.actions):
                node.pending, node.frozen, node.frozen_before_done = (decision, inputs, timing), True, True
                self.note(f"{name}: agent frozen between deciding and acting: {decision.reason}")
                executor.last_error = "frozen"
                return False
            return original(decision, inputs, timing)

        _intercept(executor, run)
        node.frozen_before_done = False
        self.note(f"{name}: will freeze before carrying out its next {action}")

    def fail_pg(self, name: str, operation: str, count: int = 1) -> None:
        """The next ``count`` calls of a PostgreSQL ``operation`` on ``name`` fail (e.g. post_bootstrap)."""
        self.pg(name).fail_next[operation] = count
        self.note(f"{name}: the next {count} {operation} fail")

    def fail_once(self, name: str, failure: FailOnce) -> None:
        node = self.node(name)
        node.fail_once = failure
        failure.armed_at = self.elapsed
        executor = node.loop.executor
        original = executor.run

        def run(decision: Decision, inputs: Inputs, timing: Timing) -> bool:
            if failure.fired_at is not None or not failure.matches(decision) \
                    or failure.index >= len(decision.actions):
                return original(decision, inputs, timing)
            failure.fired_at, failure.decision = self.elapsed, decision
            done = failure.index + (1 if failure.mode == "after" else 0)
            ok = original(replace(decision, actions=decision.actions[:done]), inputs, timing)
            action = decision.actions[failure.index]
            self.note(f"{name}: injected failure {failure.mode} {_describe(action)}")
            if ok:
                executor.last_error = f"{type(action).__name__}: injected failure"
            return False

        _intercept(executor, run)

    # ------------------------------------------------------------------ the operator and clients
    def _view(self) -> ClusterView:
        return self.operator.load(linearizable=True, timeout_s=1.0)

    def edit_config(self, **changes: Any) -> None:
        view = self._view()
        document = view.config.to_dict() if view.config_revision is not None else dict(self.dcs_config)
        document.update(changes)
        if not self.operator.set_config(document, view.config_revision, timeout_s=1.0):
            raise RuntimeError("config changed concurrently")
        self.note(f"operator: config {changes}")

    def pause(self, paused: bool = True) -> None:
        self.edit_config(pause=paused)

    def switchover(self, leader: str | None, candidate: str | None, scheduled_in_s: float | None = None) -> None:
        at = self.clock.wall() + scheduled_in_s if scheduled_in_s is not None else None
        request = Failover(leader, candidate, at)
        view = self._view()
        expected = view.failover.revision if view.failover else None
        if not self.operator.set_failover(request, expected, timeout_s=1.0):
            raise RuntimeError("failover key changed concurrently")
        self.note(f"operator: {'switchover' if leader else 'failover'} {failover_document(request)}")

    def write(self, target: str, count: int) -> tuple[int, int]:
        """A client writes ``count`` rows to ``target`` (a name, or ``primary``: whoever accepts)."""
        if target == "primary":
            writers = self.network.writable()
            pg = writers[0] if writers else None
        else:
            pg = self.pg(target)
        accepted, acknowledged = pg.write(count) if pg else (0, 0)
        self.note(f"client: {count} writes to {pg.name if pg else target}: {accepted} accepted, "
                  f"{acknowledged} acknowledged")
        return accepted, acknowledged

    # ------------------------------------------------------------------ observations
    def leader(self) -> str | None:
        kv = self.kv.get(self.layout.key(keys.LEADER))
        return kv.value if kv else None

    def writable(self) -> list[str]:
        return sorted(pg.name for pg in self.network.writable())

    def lost(self) -> set[int]:
        """Acknowledged writes missing from the current primary (which must exist)."""
        writers = self.network.writable()
        if len(writers) != 1:
            raise AssertionError(f"lost writes are counted against the one primary; writable: {self.writable()}")
        return self.network.acknowledged - set(writers[0].wal)

    def convergence_problem(self) -> str | None:
        """None when there is one primary holding the key and every reachable data node streams from it."""
        leader, writers = self.leader(), self.writable()
        if leader is None or writers != [leader]:
            return f"leader key {leader}, writable primaries {writers}"
        for node in self.nodes.values():
            pg = node.pg
            if pg is None or node.name == leader or not node.active or node.name in self.network.cut:
                continue
            if not (pg.running and pg.in_recovery and pg.streaming and host_of(pg.upstream_url) == leader):
                return (f"{node.name} is not a streaming replica of {leader} (running={pg.running}, "
                        f"replica={pg.in_recovery}, streaming={pg.streaming}, upstream={host_of(pg.upstream_url)})")
        return None

    def run_until_converged(self, limit_s: float, step_s: float = 5.0) -> bool:
        waited = 0.0
        while waited < limit_s:
            if self.convergence_problem() is None:
                return True
            self.run(step_s)
            waited += step_s
        return self.convergence_problem() is None


def _describe(action: Action) -> str:
    fields = {k: v for k, v in vars(action).items() if k not in ("reason", "conn_url", "expected_revision")}
    name = type(action).__name__
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in fields.items())})" if fields else name
