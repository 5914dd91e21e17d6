"""DESIGN.md section 5: executing only a prefix of a decision's actions and deciding again converges.

Each situation drives the simulation to the moment a node makes an important decision (bootstrap,
failover, switchover, restart in place, rejoin with rewind, a synchronous-standby change, a clone). The
executor then fails the action at index ``k``: ``before`` it runs (a lost compare-and-set, a timeout
before sending) or ``after`` it ran (an unknown outcome). The cluster must still converge to one primary
that every reachable node follows, lose no acknowledged write, and never have two writable primaries
(the simulation's checker raises the moment it would).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raftpg.ha import actions as act
from raftpg.ha.actions import Decision
from raftpg.testing.simulation import DEFAULT_DCS_CONFIG, FailOnce, Simulation


def contains(kind: type) -> Callable[[Decision], bool]:
    return lambda decision: decision.has(kind)


def established(seed: int, *, sync: bool = False) -> Simulation:
    sim = Simulation(seed, dcs_config={**DEFAULT_DCS_CONFIG, "synchronous_mode": sync})
    sim.add_node("n1")
    sim.run(10)
    sim.add_node("n2")
    sim.add_node("n3")
    sim.run(40)
    assert sim.convergence_problem() is None, sim.tail()
    sim.write("primary", 10)
    sim.run(2)
    return sim


def bootstrap(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = Simulation(seed)
    sim.add_node("n1")
    failure = FailOnce(contains(act.Initdb), k, mode)
    sim.fail_once("n1", failure)
    sim.run(5)
    sim.add_node("n2")
    sim.add_node("n3")
    return sim, [failure]


def failover(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed)
    failures = [FailOnce(contains(act.Promote), k, mode) for _ in ("n2", "n3")]
    sim.fail_once("n2", failures[0])
    sim.fail_once("n3", failures[1])
    sim.partition("n1")
    return sim, failures


def switchover_primary(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed)
    failure = FailOnce(contains(act.HandOverLeaderKey), k, mode)
    sim.fail_once("n1", failure)
    sim.switchover("n1", "n2")
    return sim, [failure]


def switchover_candidate(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed)
    failure = FailOnce(contains(act.Promote), k, mode)
    sim.fail_once("n2", failure)
    sim.switchover("n1", "n2")
    return sim, [failure]


def restart_in_place(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed)
    failure = FailOnce(contains(act.StartPrimary), k, mode)
    sim.fail_once("n1", failure)
    sim.kill_pg("n1")
    return sim, [failure]


def rejoin(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed)
    sim.partition("n1")
    sim.run(45)
    assert sim.leader() == "n2", sim.tail()
    failure = FailOnce(contains(act.Rewind), k, mode)
    sim.fail_once("n1", failure)
    sim.heal()
    return sim, [failure]


def sync_change(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed, sync=True)
    failure = FailOnce(contains(act.SetSynchronousStandbys), k, mode)
    sim.fail_once("n1", failure)
    sync = sim.operator.load(linearizable=True, timeout_s=1.0).sync
    assert sync is not None and len(sync.sync_standby) == 1, sim.tail()
    sim.kill_agent(sync.sync_standby[0])  # its PostgreSQL goes with it: the primary must pick the other
    return sim, [failure]


def clone(seed: int, k: int, mode: str) -> tuple[Simulation, list[FailOnce]]:
    sim = established(seed)
    sim.kill_agent("n3")
    sim.wipe("n3")
    sim.start_agent("n3")
    failure = FailOnce(contains(act.CloneFrom), k, mode)
    sim.fail_once("n3", failure)
    return sim, [failure]


SITUATIONS = {
    "bootstrap": bootstrap, "failover": failover, "switchover-primary": switchover_primary,
    "switchover-candidate": switchover_candidate, "restart-in-place": restart_in_place, "rejoin": rejoin,
    "sync-change": sync_change, "clone": clone,
}



@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("situation", SITUATIONS)
def test_an_interrupted_decision_converges(situation: str, mode: str) -> None:
    """For k = 0, 1, ... until the target decision has no action k: fail action k, then converge."""
    for k in range(20):
        sim, failures = SITUATIONS[situation](seed=11 + k, k=k, mode=mode)
        sim.run(60)
        fired = [f for f in failures if f.fired_at is not None]
        if not fired:
            armed = min(f.armed_at or 0.0 for f in failures)
            lengths = [len(d.actions) for n in sim.nodes.values() for at, d in n.decisions
                       if at >= armed and any(f.matches(d) for f in failures)]
            assert lengths, f"the target decision never came:\n{sim.tail()}"
            assert k > 0 and max(lengths) <= k
            return
        context = f"failing action {k} ({mode}) of {fired[0].decision}"
        assert sim.run_until_converged(240), f"no convergence after {context}: " \
            f"{sim.convergence_problem()}\n{sim.tail()}"
        assert not sim.lost(), f"acknowledged writes lost after {context}: {sorted(sim.lost())}\n{sim.tail()}"
        assert sim.max_writers <= 1
    raise AssertionError("a decision with 20 actions?")
