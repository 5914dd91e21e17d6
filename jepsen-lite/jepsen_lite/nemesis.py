"""Faults ("nemeses"): small named pieces with ``start()``, ``verify()`` and ``stop()``, and a seeded schedule.

Every fault proves it took effect (``verify``) and the proof goes into the history as a nemesis entry
``{"phase": "verify", "ok": ..., ...}`` (checkers only pair ``start``/``stop`` into fault windows):

===================== ======================================================================================
name                  what it does (target: the primary, a replica, the Raft leader or a random node)
===================== ======================================================================================
partition-primary     isolate the PostgreSQL primary from the other nodes (both ways)
partition-leader      isolate the Raft leader
partition-replica     isolate one replica
partition-random      isolate a random node
partition-halves      random halves (1 vs 2 for three nodes)
partition-ring        majorities ring: each node hears a majority, no two the same one (3 nodes: a one-way
                      cycle n_a -x-> n_b -x-> n_c -x-> n_a)
partition-bridge      two groups that cannot talk, one node seeing both
partition-oneway      packets from A are dropped at B (UDP A->B lost, B->A delivered; TCP fails both ways)
partition-oneway-new  A cannot open connections to B, B can still connect to A (``ct state new`` drop)
kill-agent            SIGKILL the agent (the fencing supervisor then stops its PostgreSQL); restart it
kill-postgres         SIGKILL the postmaster's process group; the agent restarts PostgreSQL
kill-node             SIGKILL the agent and PostgreSQL together; restart the agent
pause                 SIGSTOP the agent (PostgreSQL keeps running, fenced by the supervisor's lease), SIGCONT
clock                 step one node's wall clock (agent and PostgreSQL) by +-30..120 s with libfaketime
switchover            ``POST /switchover {leader, candidate}`` on the primary, wait for the candidate (a 4xx
                      refusal changed nothing and counts as "not started")
failover              ``POST /failover {candidate, force: true}``, wait for the candidate
restart-cluster       SIGKILL every node within ~100 ms, restart them in random order, 0-3 s apart
stop-cluster          SIGTERM every node (clean stop), start them again
pause-unfenced        MUTANT, never in "all": SIGSTOP the agent AND its fencing supervisor, so nothing fences
                      the still-running postmaster (Patroni without a watchdog); must be caught by the checkers
===================== ======================================================================================

Groups for ``--nemesis``: ``partition`` (all partitions), ``kill`` (kill-agent, kill-postgres, kill-node),
``admin`` (switchover, failover), ``cluster`` (restart-cluster, stop-cluster), ``all`` (everything but
mutants). The KV mode supports partitions, kill-agent (the driver), pause, clock and restart-cluster.

Schedule: ``make_schedule(names, seed, total_s)`` draws rounds from ``random.Random(seed)``; each round runs
every selected fault once, in a shuffled order, with drawn hold and quiet times and parameters, so every
kind is exercised. Runtime choices (which replica, which halves) use ``random.Random(f"{seed}-{index}")``:
the same seed replays the same schedule; targets named by role follow the cluster's actual state.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from jepsen_lite.cluster import (
    KvCluster,
    NodeProcesses,
    RaftpgCluster,
    faked_wall_time,
    proc_state,
    wait_until,
)
from jepsen_lite.topology import Cut, Topology

log = logging.getLogger(__name__)


class FaultError(RuntimeError):
    """A fault could not be started (e.g. no primary to isolate): logged, the run goes on."""


@dataclass(frozen=True)
class Step:
    index: int
    fault: str
    hold_s: float
    quiet_s: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Env:
    topology: Topology
    cluster: NodeProcesses
    ttl_s: float
    loop_wait_s: float
    rng: random.Random
    say: Callable[[str], None] = lambda _msg: None


# ------------------------------------------------------------------------------------------ base + targets


class Fault:
    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset({"raftpg", "kv"})
    mutant: ClassVar[bool] = False

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
    @property
    def cluster(self) -> NodeProcesses:
        return self.env.cluster

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
        return rng.choice(cluster.names)


def _role(rng: random.Random) -> str:
    return rng.choice(["primary", "primary", "replica", "random"])


# ---------------------------------------------------------------------------------------------- partitions


class Partition(Fault):
    shape: ClassVar[str] = ""

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        raise NotImplementedError

    def start(self) -> dict[str, Any]:
        cuts, details = self.cuts()
        if not cuts:
            raise FaultError("the partition would cut nothing")
        self.applied = cuts
        self.env.topology.apply(cuts)
        return {**details, "cuts": sorted(c.describe() for c in cuts)}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        topo, names = self.env.topology, self.env.topology.names
        cut_pairs = {(c.src, c.dst): c for c in self.applied}
        allowed = [(a, b) for a in names for b in names if a != b and (a, b) not in cut_pairs]
        probes: list[tuple[str, Cut | None, str, str]] = [("blocked", c, c.src, c.dst) for c in self.applied]
        probes += [("allowed", None, a, b) for a, b in allowed[:4]]
        results: dict[int, bool] = {}

        def probe(i: int, kind: str, cut: Cut | None, src: str, dst: str) -> None:
            if cut is not None and cut.mode == "new":
                results[i] = topo.tcp_connects(src, dst)
            else:
                results[i] = topo.udp_delivers(src, dst, tries=2, wait_s=0.25)

        threads = [threading.Thread(target=probe, args=(i, *p), daemon=True) for i, p in enumerate(probes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        failures = []
        for i, (kind, cut, src, dst) in enumerate(probes):
            delivered = results.get(i)
            if delivered is None or delivered != (kind == "allowed"):
                failures.append(f"{kind} {src}->{dst} delivered={delivered}")
            if cut is not None and cut.mode == "new" and not topo.tcp_connects(dst, src):
                failures.append(f"one-way (new) {dst}->{src} should connect but did not")
        evidence = {"probes": len(probes), "failures": failures}
        return not failures, evidence

    def stop(self) -> dict[str, Any]:
        self.env.topology.heal()
        return {}


class Isolate(Partition):
    role: ClassVar[str] = "random"

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        victim = self.resolve(self.role)
        others = [n for n in self.env.topology.names if n != victim]
        return frozenset([Cut(victim, o) for o in others] + [Cut(o, victim) for o in others]), {"victim": victim}


class IsolatePrimary(Isolate):
    name, role = "partition-primary", "primary"


class IsolateLeader(Isolate):
    name, role = "partition-leader", "leader"


class IsolateReplica(Isolate):
    name, role = "partition-replica", "replica"


class IsolateRandom(Isolate):
    name, role = "partition-random", "random"


def _both_ways(group_a: Sequence[str], group_b: Sequence[str]) -> frozenset[Cut]:
    return frozenset([Cut(a, b) for a in group_a for b in group_b] + [Cut(b, a) for a in group_a for b in group_b])


class Halves(Partition):
    name = "partition-halves"

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        names = list(self.env.topology.names)
        self.env.rng.shuffle(names)
        small, big = names[: len(names) // 2], names[len(names) // 2:]
        return _both_ways(small, big), {"halves": [sorted(small), sorted(big)]}


class Ring(Partition):
    name = "partition-ring"

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        ring = list(self.env.topology.names)
        self.env.rng.shuffle(ring)
        n, majority = len(ring), len(ring) // 2 + 1
        cuts = set()
        for i, dst in enumerate(ring):
            hears = {ring[(i + k) % n] for k in range(majority)}
            cuts.update(Cut(src, dst) for src in ring if src not in hears)
        return frozenset(cuts), {"ring": ring}


class Bridge(Partition):
    name = "partition-bridge"

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        names = list(self.env.topology.names)
        self.env.rng.shuffle(names)
        bridge, rest = names[0], names[1:]
        half = max(1, len(rest) // 2)
        return _both_ways(rest[:half], rest[half:]), {"bridge": bridge, "sides": [rest[:half], rest[half:]]}


class OneWay(Partition):
    name = "partition-oneway"
    mode: ClassVar[str] = "all"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(0.5 * ttl_s, 1.5 * ttl_s), {"from": rng.choice(["primary", "random"])}

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        src = self.resolve(self.params.get("from", "random"))
        dst = self.env.rng.choice([n for n in self.env.topology.names if n != src])
        return frozenset([Cut(src, dst, self.mode)]), {"from": src, "to": dst}


class OneWayNew(OneWay):
    name, mode = "partition-oneway-new", "new"


# ------------------------------------------------------------------------------------------------ processes


class KillAgent(Fault):
    name = "kill-agent"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": _role(rng)}

    def start(self) -> dict[str, Any]:
        self.victim = self.resolve(self.params.get("target", "random"))
        cluster = self.cluster
        self.postmaster = cluster.postmaster_pid(self.victim) if isinstance(cluster, RaftpgCluster) else None
        self.t0 = time.monotonic()
        self.pid = cluster.kill(self.victim)
        if self.pid is None:
            raise FaultError(f"{self.victim} was not running")
        return {"victim": self.victim, "pid": self.pid}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        evidence: dict[str, Any] = {"agent_state": proc_state(self.pid)}
        ok = evidence["agent_state"] in (None, "Z")
        if self.postmaster:  # the supervisor must fence PostgreSQL once the agent is gone (informational)
            gone = wait_until(lambda: proc_state(self.postmaster) in (None, "Z"), self.env.ttl_s, 0.05)
            evidence["postmaster_fenced_after_s"] = round(time.monotonic() - self.t0, 3) if gone else None
        return ok, evidence

    def stop(self) -> dict[str, Any]:
        self.cluster.start(self.victim)
        return {"victim": self.victim, "pid": self.cluster.pid(self.victim)}


class KillPostgres(Fault):
    name = "kill-postgres"
    kinds = frozenset({"raftpg"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": _role(rng)}

    def start(self) -> dict[str, Any]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        self.victim = self.resolve(self.params.get("target", "random"))
        self.pid = cluster.kill_postgres(self.victim)
        if self.pid is None:
            raise FaultError(f"no postmaster running on {self.victim}")
        return {"victim": self.victim, "postmaster": self.pid}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        gone = wait_until(lambda: proc_state(self.pid) in (None, "Z"), 5, 0.05)
        return bool(gone), {"postmaster_state": proc_state(self.pid)}

    def stop(self) -> dict[str, Any]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        back = wait_until(lambda: cluster.postmaster_pid(self.victim), 30, 0.5)
        return {"victim": self.victim, "restarted_by_agent": back}


class KillNode(Fault):
    name = "kill-node"
    kinds = frozenset({"raftpg"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": _role(rng)}

    def start(self) -> dict[str, Any]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        self.victim = self.resolve(self.params.get("target", "random"))
        self.postmaster = cluster.postmaster_pid(self.victim)
        self.supervisor = cluster.supervisor_pid(self.victim)
        self.agent = cluster.pid(self.victim)
        if self.supervisor:
            cluster.pause_pid(self.supervisor)  # so it cannot fence first: this is a crash, not a fence
        cluster.kill_postgres(self.victim)
        cluster.kill(self.victim)
        if self.supervisor:
            cluster.resume_pid(self.supervisor)
        return {"victim": self.victim, "agent": self.agent, "postmaster": self.postmaster}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        pids = [p for p in (self.agent, self.postmaster) if p]
        gone = wait_until(lambda: all(proc_state(p) in (None, "Z") for p in pids), 5, 0.05)
        return bool(gone) and bool(pids), {"states": {p: proc_state(p) for p in pids}}

    def stop(self) -> dict[str, Any]:
        self.cluster.start(self.victim)
        return {"victim": self.victim}


class Pause(Fault):
    name = "pause"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        long = rng.random() < 0.75  # mostly longer than the TTL: the lease must expire meanwhile
        hold = rng.uniform(1.5 * ttl_s, 2.5 * ttl_s) if long else rng.uniform(1, 0.5 * ttl_s)
        return hold, {"target": _role(rng)}

    def pids(self) -> list[int]:
        pid = self.cluster.pid(self.victim)
        return [pid] if pid else []

    def start(self) -> dict[str, Any]:
        self.victim = self.resolve(self.params.get("target", "random"))
        self.paused = self.pids()
        if not self.paused:
            raise FaultError(f"{self.victim} is not running")
        for pid in self.paused:
            self.cluster.pause_pid(pid)
        return {"victim": self.victim, "pids": self.paused}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        stopped = wait_until(lambda: all(proc_state(p) == "T" for p in self.paused), 2, 0.05)
        return bool(stopped), {"states": {p: proc_state(p) for p in self.paused}}

    def stop(self) -> dict[str, Any]:
        for pid in self.paused:
            self.cluster.resume_pid(pid)
        return {"victim": self.victim, "states": {p: proc_state(p) for p in self.paused}}


class PauseUnfenced(Pause):
    """The mutant: agent and fencing supervisor frozen together, so the postmaster keeps taking writes."""

    name = "pause-unfenced"
    kinds = frozenset({"raftpg"})
    mutant = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2.5 * ttl_s, 3 * ttl_s), {"target": "primary"}

    def pids(self) -> list[int]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        agent, supervisor = cluster.pid(self.victim), cluster.supervisor_pid(self.victim)
        self.postmaster = cluster.postmaster_pid(self.victim)
        return [p for p in (supervisor, agent) if p]  # supervisor first: it must not see the agent stop

    def verify(self) -> tuple[bool, dict[str, Any]]:
        ok, evidence = super().verify()
        evidence["postmaster_state"] = proc_state(self.postmaster) if self.postmaster else None
        ok = ok and len(self.paused) == 2 and evidence["postmaster_state"] not in (None, "T", "Z")
        return ok, evidence


class Clock(Fault):
    name = "clock"
    needs_faketime = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(ttl_s, 2 * ttl_s), {"target": _role(rng),
                                               "offset_s": rng.choice([120, -120, 60, -60, 30, -30])}

    def start(self) -> dict[str, Any]:
        if not self.cluster.opts.faketime:
            raise FaultError("nodes were not started under libfaketime (faketime=False)")
        self.victim = self.resolve(self.params.get("target", "random"))
        self.offset_s = int(self.params.get("offset_s", 120))
        self.cluster.set_clock_offset(self.victim, f"{self.offset_s:+d}s")
        return {"victim": self.victim, "offset_s": self.offset_s}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        env = self.cluster.clock_env(self.victim)
        deadline = time.monotonic() + 3
        probe = faked_wall_time(env) - time.time()
        while abs(probe - self.offset_s) > 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            probe = faked_wall_time(env) - time.time()
        evidence: dict[str, Any] = {"probe_skew_s": round(probe, 2)}
        ok = abs(probe - self.offset_s) <= 2
        cluster = self.cluster
        if isinstance(cluster, RaftpgCluster) and cluster.alive(self.victim):
            tolerance = self.env.loop_wait_s + 3

            def agent_skew() -> float | None:
                seen = (cluster.status(self.victim) or {}).get("dcs_last_seen")
                return None if seen is None else seen - time.time()

            skew = wait_until(lambda: (s := agent_skew()) is not None and abs(s - self.offset_s) <= tolerance,
                              3 * tolerance, 0.5)
            last = agent_skew()
            evidence["agent_dcs_last_seen_skew_s"] = None if last is None else round(last, 1)
            evidence["agent_confirms"] = bool(skew)
        return ok, evidence

    def stop(self) -> dict[str, Any]:
        self.cluster.set_clock_offset(self.victim, "+0")
        return {"victim": self.victim}


class Switchover(Fault):
    name = "switchover"
    kinds = frozenset({"raftpg"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return 0.0, {}

    def request(self, primary: str, candidate: str) -> tuple[int, Any]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        return cluster.api(primary, "POST", "/switchover", {"leader": primary, "candidate": candidate},
                           timeout_s=30)

    def start(self) -> dict[str, Any]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        primary = self.resolve("primary")
        candidates = [n for n in cluster.data_names if n != primary]
        if not candidates:
            raise FaultError("no candidate")
        self.candidate = self.env.rng.choice(candidates)
        code, body = self.request(primary, self.candidate)
        self.code = code
        if 400 <= code < 500:  # a definite refusal changed nothing: not an injected fault
            raise FaultError(f"refused with {code}: {body}")
        return {"from": primary, "candidate": self.candidate, "status": code,
                "answer": body if isinstance(body, str | dict | None) else str(body)}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        t0 = time.monotonic()
        done = wait_until(lambda: cluster.primary() == self.candidate, 30, 0.25)
        return bool(done), {"http_status": self.code, "new_primary_after_s": round(time.monotonic() - t0, 2)
                            if done else None}


class Failover(Switchover):
    name = "failover"

    def request(self, primary: str, candidate: str) -> tuple[int, Any]:
        cluster = self.cluster
        assert isinstance(cluster, RaftpgCluster)
        # force: Patroni-style manual failover even though the primary is healthy (it must demote first)
        return cluster.api(candidate, "POST", "/failover", {"candidate": candidate, "force": True}, timeout_s=30)


class RestartCluster(Fault):
    name = "restart-cluster"
    clean = False

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(1, 5), {"stagger_s": [round(rng.uniform(0, 3), 2) for _ in range(16)]}

    def start(self) -> dict[str, Any]:
        cluster = self.cluster
        self.pids = [p for p in (cluster.pid(n) for n in cluster.names) if p]
        if self.clean:
            threads = [threading.Thread(target=cluster.stop, args=(n,), daemon=True) for n in cluster.names]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        else:
            if isinstance(cluster, RaftpgCluster):
                for n in cluster.names:
                    sup = cluster.supervisor_pid(n)
                    if sup:
                        cluster.pause_pid(sup)  # a crash: nobody fences, everything dies at once
                for n in cluster.data_names:
                    cluster.kill_postgres(n)
            for n in cluster.names:
                cluster.kill(n)
            cluster.resume_all()
        return {"pids": self.pids}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        gone = wait_until(lambda: all(proc_state(p) in (None, "Z") for p in self.pids), 10, 0.1)
        return bool(gone), {"states": {p: proc_state(p) for p in self.pids}}

    def stop(self) -> dict[str, Any]:
        order = list(self.cluster.names)
        self.env.rng.shuffle(order)
        staggers = list(self.params.get("stagger_s", [])) or [0.0] * len(order)
        for i, name in enumerate(order):
            if i:
                time.sleep(min(3.0, staggers[i % len(staggers)]))
            self.cluster.start(name)
        return {"order": order}


class StopCluster(RestartCluster):
    name = "stop-cluster"
    clean = True


FAULTS: dict[str, type[Fault]] = {cls.name: cls for cls in (
    IsolatePrimary, IsolateLeader, IsolateReplica, IsolateRandom, Halves, Ring, Bridge, OneWay, OneWayNew,
    KillAgent, KillPostgres, KillNode, Pause, Clock, Switchover, Failover, RestartCluster, StopCluster,
    PauseUnfenced,
)}
GROUPS: dict[str, tuple[str, ...]] = {
    "partition": tuple(n for n in FAULTS if n.startswith("partition-")),
    "kill": ("kill-agent", "kill-postgres", "kill-node"),
    "admin": ("switchover", "failover"),
    "cluster": ("restart-cluster", "stop-cluster"),
    "all": tuple(n for n, c in FAULTS.items() if not c.mutant),
}


def expand(spec: str, kind: str = "raftpg") -> list[str]:
    """``"kill,partition-halves"`` -> fault names, groups expanded, those not applicable to ``kind`` dropped
    (with a warning); unknown names raise ValueError."""
    names: list[str] = []
    for word in (w.strip() for w in spec.split(",") if w.strip()):
        if word in GROUPS:
            names.extend(GROUPS[word])
        elif word in FAULTS:
            names.append(word)
        else:
            raise ValueError(f"unknown nemesis {word!r}; known: {sorted(FAULTS)} and groups {sorted(GROUPS)}")
    result = []
    for name in dict.fromkeys(names):
        if kind in FAULTS[name].kinds:
            result.append(name)
        else:
            log.warning("nemesis %s does not apply to a %s cluster: skipped", name, kind)
    return result


def make_schedule(faults: Sequence[str], seed: int, total_s: float, ttl_s: float,
                  quiet_s: tuple[float, float] = (3.0, 8.0), max_steps: int = 500) -> list[Step]:
    """Rounds of every fault once, shuffled, until the expected duration reaches ``total_s``."""
    rng = random.Random(seed)
    steps: list[Step] = []
    expected = 0.0
    while faults and expected < total_s and len(steps) < max_steps:
        order = list(faults)
        rng.shuffle(order)
        for name in order:
            hold, params = FAULTS[name].plan(rng, ttl_s)
            quiet = rng.uniform(*quiet_s)
            steps.append(Step(len(steps), name, round(hold, 2), round(quiet, 2), params))
            expected += hold + quiet + 5.0  # + an estimate of the wait for a healthy cluster
            if expected >= total_s:
                break
    return steps


def schedule_json(steps: Sequence[Step]) -> str:
    return json.dumps([asdict(s) for s in steps], indent=1)


def fault_for(step: Step, env: Env) -> Fault:
    return FAULTS[step.fault](env, step)


__all__ = ["FAULTS", "GROUPS", "Env", "Fault", "FaultError", "KvCluster", "Step", "expand", "fault_for",
           "make_schedule", "schedule_json"]
