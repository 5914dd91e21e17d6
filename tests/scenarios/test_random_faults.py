"""Seeded random fault schedules on the simulation (TigerBeetle's VOPR, in miniature).

Each seed builds a three-node cluster and plays a random sequence of faults and operator requests:
partitions, cut replication links, PostgreSQL crashes, killed or frozen agents, a Raft leader change
(every lease countdown restarts), slow DCS calls (timeouts) and DCS answers lost after the write
applied (unknown outcomes), slow
PostgreSQL operations (time passes mid-decision), switchovers (named, any, scheduled), operator requests
(restart, reload, reinitialize), dynamic config changes (ttl, loop_wait, maximum_lag_on_failover,
strict and, in asynchronous runs, synchronous mode itself), pause/resume, and client writes. Then every fault is
repaired and the cluster must converge. Throughout, the simulation's checker forbids two writable
primaries. In synchronous mode no acknowledged write may be lost; in asynchronous mode a stranded
primary's acknowledged writes may be (that is what asynchronous means), so only the other checks apply.

A failure prints its seed; ``Simulation(seed)`` with the same schedule replays it exactly.
"""

from __future__ import annotations

import random

import pytest

from raftpg.testing.simulation import DEFAULT_DCS_CONFIG, Simulation

NAMES = ("n1", "n2", "n3")
TIMINGS = ((30, 10, 10), (20, 5, 5), (10, 2, 4), (15, 5, 5))


def play(seed: int, *, sync: bool | str, steps: int = 40, witness: bool = False) -> Simulation:
    """Three data nodes, or (``witness``) two data nodes and a witness. ``sync``: synchronous_mode (True,
    False or "quorum")."""
    rng = random.Random(seed * 7919 + int(bool(sync)) + (2 if sync == "quorum" else 0))
    sim = Simulation(seed, dcs_config={**DEFAULT_DCS_CONFIG, "synchronous_mode": sync})
    sim.add_node("n1")
    sim.run(10)
    sim.add_node("n2")
    sim.add_node("n3", witness=witness)
    sim.run(30)
    for _ in range(steps):
        fault(sim, rng, sync)
        sim.run(rng.uniform(0.5, 25.0))
    repair(sim)
    return sim


def fault(sim: Simulation, rng: random.Random, sync: bool | str) -> None:
    name = rng.choice(NAMES)
    node = sim.node(name)
    kind = rng.choices(
        ["write", "partition", "heal", "cut", "kill-pg", "kill-agent", "start-agent", "freeze", "thaw",
         "switchover", "raft-leader-change", "pause", "flaky-dcs", "slow-pg", "request", "config", "slow-dcs"],
        weights=[6, 2, 3, 1, 2, 1, 2, 1, 2, 1, 1, 0.3, 1, 1, 1, 1, 1])[0]
    if kind == "write":
        sim.write("primary", rng.randint(1, 30))
    elif kind == "partition":
        sim.partition(name)
    elif kind == "heal":
        sim.heal()
    elif kind == "cut":
        sim.cut_link(name, rng.choice([n for n in NAMES if n != name]))
    elif kind == "kill-pg" and node.pg is not None and node.pg.running:
        sim.kill_pg(name)
    elif kind == "kill-agent" and node.agent_alive:
        sim.kill_agent(name)
    elif kind == "start-agent" and not node.agent_alive:
        sim.start_agent(name)
    elif kind == "freeze" and node.active:
        sim.freeze(name)
    elif kind == "thaw" and node.frozen:
        sim.thaw(name)
    elif kind == "switchover" and sim.leader():
        try:
            sim.switchover(sim.leader(), rng.choice([None, *(n for n in NAMES if n != sim.leader())]),
                           rng.choice([None, None, 30.0]))
        except RuntimeError:
            pass  # a request is pending already
    elif kind == "request" and node.active:
        what = rng.choice(["restart", "reload", "reinitialize"])
        node.loop.request(what)
        sim.note(f"operator: {what} {name}")
    elif kind == "config":
        change = rng.choice(["timing", "strict", "sync", "lag"])
        if change == "timing":  # valid ones only: ttl >= loop_wait + 2 * retry_timeout (raftpg.config)
            ttl, loop_wait, retry_timeout = rng.choice(TIMINGS)
            sim.edit_config(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout)
        elif change == "strict":
            sim.edit_config(synchronous_mode_strict=rng.random() < 0.5)
        elif change == "lag":
            sim.edit_config(maximum_lag_on_failover=rng.choice([16384, 1048576]))
        elif not sync:  # turning synchronous mode off would allow the losses a sync run must not have
            sim.edit_config(synchronous_mode=rng.random() < 0.5)
    elif kind == "raft-leader-change":
        sim.kv.new_leader()
        sim.note("store: a new Raft leader restarts every lease countdown")
    elif kind == "pause":
        sim.pause(not sim.operator.load(linearizable=True, timeout_s=1.0).paused)
    elif kind == "flaky-dcs":
        sim.flaky_dcs(name, 0.0 if node.dcs.flaky else 0.3)
    elif kind == "slow-dcs":
        sim.slow_dcs(name, 0.0 if node.dcs.latency_s else rng.choice([0.2, 1.0, 3.0, 6.0]))
    elif kind == "slow-pg" and node.pg is not None:
        sim.slow_pg(name, 0.0 if node.pg.operation_s else rng.uniform(0.5, 8.0))


def repair(sim: Simulation) -> None:
    sim.heal()
    for name, node in sim.nodes.items():
        sim.flaky_dcs(name, 0.0)
        sim.slow_dcs(name, 0.0)
        if node.pg is not None:
            sim.slow_pg(name, 0.0)
        if not node.agent_alive:
            sim.start_agent(name)
        elif node.frozen:
            sim.thaw(name)
    if sim.operator.load(linearizable=True, timeout_s=1.0).paused:
        sim.pause(False)



@pytest.mark.parametrize("witness", [False, True], ids=["3-data", "2-data-witness"])
@pytest.mark.parametrize("sync", [False, True, "quorum"], ids=["async", "sync", "quorum"])
@pytest.mark.parametrize("seed", range(8))
def test_random_faults_then_repair_converges(seed: int, sync: bool | str, witness: bool) -> None:
    sim = play(seed, sync=sync, witness=witness)
    assert sim.run_until_converged(300), \
        f"seed {seed}: no convergence after repair: {sim.convergence_problem()}\n{sim.tail(120)}"
    assert sim.max_writers <= 1
    if sync:
        assert not sim.lost(), f"seed {seed}: acknowledged writes lost in synchronous mode: " \
            f"{sorted(sim.lost())}\n{sim.tail(120)}"
