"""The simulation itself: its checker must catch what it claims to, and a seed must replay exactly."""

from __future__ import annotations

import pytest

from raftpg.testing.simulation import SafetyViolation, Simulation


def three_nodes(seed: int, **options: float) -> Simulation:
    sim = Simulation(seed, **options)
    sim.add_node("n1")
    sim.run(10)
    sim.add_node("n2")
    sim.add_node("n3")
    sim.run(30)
    return sim


def test_the_same_seed_replays_the_same_run() -> None:
    def run(seed: int) -> list[str]:
        sim = three_nodes(seed)
        sim.write("primary", 5)
        sim.partition("n1")
        sim.run(60)
        sim.heal()
        sim.run(30)
        return sim.log

    assert run(7) == run(7)
    assert run(7) != run(8)  # the seed matters: it orders nodes acting at the same instant


def test_the_checker_catches_two_writable_primaries_when_fencing_is_too_late() -> None:
    """A frozen agent never stops its PostgreSQL; only the supervisor's fence does. Make the fence come
    far too late and the checker must see the old primary still writable when the new one promotes."""
    sim = three_nodes(1, fence_latency_s=120.0)
    sim.freeze("n1")
    with pytest.raises(SafetyViolation, match=r"\['n1', 'n2'\]"):
        sim.run(60)


def test_a_frozen_primary_is_fenced_before_another_node_promotes() -> None:
    sim = three_nodes(1)
    sim.freeze("n1")
    sim.run(60)
    assert sim.pg("n1").fenced_count == 1
    assert sim.writable() == ["n2"]
    assert sim.max_writers == 1


def test_a_partitioned_primary_stops_before_its_lease_expires_and_the_fence_is_not_needed() -> None:
    sim = three_nodes(1)
    sim.partition("n1")
    sim.run(60)
    assert not sim.pg("n1").running
    assert sim.pg("n1").fenced_count == 0
    assert sim.leader() == "n2"


def test_convergence_problem_names_a_replica_that_does_not_stream() -> None:
    sim = three_nodes(1)
    assert sim.convergence_problem() is None
    sim.cut_link("n1", "n3")
    sim.run(1)
    assert "n3 is not a streaming replica of n1" in (sim.convergence_problem() or "")
