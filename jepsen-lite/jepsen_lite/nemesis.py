"""Faults ("nemeses"): small named pieces with ``start()``, ``verify()`` and ``stop()``, and a seeded schedule.

Every fault proves it took effect (``verify``) and the proof goes into the history as a nemesis entry
``{"phase": "verify", "ok": ..., ...}`` (checkers only pair ``start``/``stop`` into fault windows; the runner
writes ``start`` before calling ``start()`` and ``started`` with its details after, so a fault that does its
harm inside ``start()``, a switchover, is inside its own window):

====================== =====================================================================================
name                   what it does (target: the primary, a replica, the Raft leader or a random node)
====================== =====================================================================================
partition-primary      isolate the PostgreSQL primary from the other nodes (both ways)
partition-leader       isolate the Raft (or etcd) leader
partition-replica      isolate one replica
partition-random       isolate a random node
partition-halves       random halves (1 vs 2 for three nodes)
partition-ring         majorities ring: each node hears a majority, no two the same one
partition-bridge       two groups that cannot talk, one node seeing both
partition-oneway       packets from A are dropped at B (UDP A->B lost, B->A delivered; TCP fails both ways)
partition-oneway-new   A cannot open connections to B, B can still connect to A (``ct state new`` drop)
packet-loss            every node-to-node link (or one node's) drops 10-70 % of packets (nft numgen random)
kill-agent             SIGKILL the agent (the fencing supervisor then stops its PostgreSQL); restart it
kill-postgres          SIGKILL the postmaster's process group; the agent restarts PostgreSQL
kill-node              SIGKILL the agent and PostgreSQL together; restart the agent
pause                  SIGSTOP the agent (PostgreSQL keeps running, fenced by the supervisor's lease), SIGCONT
clock                  step one node's wall clock (agent and PostgreSQL) by +-30..120 s with libfaketime
freeze-postgres        SIGSTOP the postmaster's process group (a hung server; its agent runs on), SIGCONT
stop-group             SIGTERM / SIGINT to the agent's whole process group (systemd, Ctrl-C); start again
exhaust-connections    take every connection slot of one PostgreSQL and keep writing on one of them
disk-full-pg           fill the filesystem of one node's PostgreSQL data directory (pg_wal included)
disk-full-raft         fill the filesystem of one node's Raft data directory
poison-dcs             write malformed documents straight into etcd under raftpg's keys (etcd only)
switchover             ``POST /switchover {leader, candidate}``, wait for the candidate
failover               ``POST /failover {candidate, force: true}``, wait for the candidate
kill-during-switchover a switchover, then a kill of the old or new primary 0-1 s later
restart-cluster        SIGKILL every node within ~100 ms, restart them in random order, 0-3 s apart
restart-loop           restart-cluster 3-6 times in a row, 1-8 s apart, healthy or not
stop-cluster           SIGTERM every node (clean stop), start them again
double-failover        crash the primary, crash its successor soon after, bring the first back
pause-unfenced         MUTANT, never in "all": SIGSTOP the agent AND its fencing supervisor, so nothing fences
                       the still-running postmaster (Patroni without a watchdog); must be caught
====================== =====================================================================================

(``partition-during-bootstrap`` is not a fault of this list: a new bootstrap starts a new cluster, so it is
its own workload, ``--workload bootstrap``; see ``bootstrap.py``.)

Groups for ``--nemesis``: see ``GROUPS``; ``all`` is everything but mutants.

Schedule: ``make_schedule(names, seed, total_s, ttl_s, overlap=K)`` draws rounds from ``random.Random(seed)``;
each round runs every selected fault once, in a shuffled order, with drawn hold and quiet times and
parameters, so every kind is exercised. With ``overlap`` K > 1 a step may carry up to K - 1 companions
(``Step.overlap``) started 0-3 s after it and stopped before it: never two ``exclusive`` faults, never the
same fault twice. Runtime choices (which replica, which halves) use ``random.Random(f"{seed}-{index}")``:
the same seed replays the same schedule; targets named by role follow the cluster's actual state.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict

from jepsen_lite.cluster import KvCluster
from jepsen_lite.faults_admin import (
    DoubleFailover,
    Failover,
    KillDuringSwitchover,
    RestartCluster,
    RestartLoop,
    StopCluster,
    Switchover,
)
from jepsen_lite.faults_dcs import PoisonDcs
from jepsen_lite.faults_disk import DiskFullPg, DiskFullRaft
from jepsen_lite.faults_net import (
    Bridge,
    Halves,
    IsolateLeader,
    IsolatePrimary,
    IsolateRandom,
    IsolateReplica,
    OneWay,
    OneWayNew,
    PacketLoss,
    Partition,
    Ring,
)
from jepsen_lite.faults_proc import (
    Clock,
    ExhaustConnections,
    FreezePostgres,
    KillAgent,
    KillNode,
    KillPostgres,
    Pause,
    PauseUnfenced,
    StopGroup,
)
from jepsen_lite.nemesis_base import Env, Fault, FaultError, Step

log = logging.getLogger(__name__)

FAULTS: dict[str, type[Fault]] = {cls.name: cls for cls in (
    IsolatePrimary, IsolateLeader, IsolateReplica, IsolateRandom, Halves, Ring, Bridge, OneWay, OneWayNew,
    PacketLoss, KillAgent, KillPostgres, KillNode, Pause, Clock, FreezePostgres, StopGroup, ExhaustConnections,
    DiskFullPg, DiskFullRaft, PoisonDcs, Switchover, Failover, KillDuringSwitchover, RestartCluster, RestartLoop,
    StopCluster, DoubleFailover, PauseUnfenced,
)}
GROUPS: dict[str, tuple[str, ...]] = {
    "partition": tuple(n for n in FAULTS if n.startswith("partition-")),
    "kill": ("kill-agent", "kill-postgres", "kill-node"),
    "admin": ("switchover", "failover"),
    "cluster": ("restart-cluster", "stop-cluster"),
    "disk-full": ("disk-full-pg", "disk-full-raft"),
    "postgres": ("freeze-postgres", "exhaust-connections", "disk-full-pg"),
    "production": ("packet-loss", "freeze-postgres", "stop-group", "exhaust-connections", "disk-full-pg",
                   "disk-full-raft", "kill-during-switchover", "restart-loop", "double-failover", "poison-dcs"),
    "all": tuple(n for n, c in FAULTS.items() if not c.mutant),
}


def expand(spec: str, kind: str = "raftpg", dcs: str = "raft") -> list[str]:
    """``"kill,partition-halves"`` -> fault names, groups expanded, those not applicable to ``kind`` or
    ``dcs`` dropped (with a warning); unknown names raise ValueError."""
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
        cls = FAULTS[name]
        if kind not in cls.kinds:
            log.warning("nemesis %s does not apply to a %s cluster: skipped", name, kind)
        elif "etcd" in cls.needs and dcs != "etcd3":
            log.warning("nemesis %s needs the etcd backend (--dcs etcd3): skipped", name)
        elif name == "disk-full-raft" and dcs != "raft":
            log.warning("nemesis %s needs the embedded Raft: skipped", name)
        else:
            result.append(name)
    return result


def needs(faults: Sequence[str]) -> frozenset[str]:
    """What the cluster must be started with for these faults (faketime, smallfs, etcd)."""
    return frozenset().union(*(FAULTS[f].needs for f in faults)) if faults else frozenset()


def make_schedule(faults: Sequence[str], seed: int, total_s: float, ttl_s: float,
                  quiet_s: tuple[float, float] = (3.0, 8.0), max_steps: int = 500, overlap: int = 1) -> list[Step]:
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
            companions = _companions(rng, name, faults, overlap, ttl_s, len(steps))
            hold = max([hold] + [c.offset_s + c.hold_s + 1 for c in companions])
            steps.append(Step(len(steps), name, round(hold, 2), round(quiet, 2), params, overlap=companions))
            expected += hold + quiet + 5.0  # + an estimate of the wait for a healthy cluster
            if expected >= total_s:
                break
    return steps


def _companions(rng: random.Random, main: str, faults: Sequence[str], overlap: int, ttl_s: float,
                index: int) -> tuple[Step, ...]:
    if overlap <= 1 or FAULTS[main].exclusive:
        return ()
    pool = [f for f in faults if f != main and not FAULTS[f].exclusive]
    count = min(len(pool), rng.randint(0, overlap - 1))
    chosen = rng.sample(pool, count) if count else []
    return tuple(Step(index * 100 + k + 1, f, round(h, 2), 0.0, p, offset_s=round(rng.uniform(0, 3), 2))
                 for k, f in enumerate(chosen) for h, p in [FAULTS[f].plan(rng, ttl_s)])


def schedule_json(steps: Sequence[Step]) -> str:
    return json.dumps([asdict(s) for s in steps], indent=1)


def fault_for(step: Step, env: Env) -> Fault:
    return FAULTS[step.fault](env, step)


__all__ = ["FAULTS", "GROUPS", "Bridge", "Clock", "Env", "Fault", "FaultError", "Halves", "IsolateRandom",
           "KillAgent", "KvCluster", "OneWay", "OneWayNew", "PacketLoss", "Partition", "Pause", "RestartCluster",
           "Ring", "Step", "expand", "fault_for", "make_schedule", "needs", "schedule_json"]
