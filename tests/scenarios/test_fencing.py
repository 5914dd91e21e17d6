"""Safety rule 6 under the fencing supervisor's worst case, for every kind of valid timing.

A frozen agent (SIGSTOP, a long pause) never stops its PostgreSQL; only the supervisor's deadline does,
and the supervisor may let writes go on for up to its worst-case latency past that deadline. The lease
margin must cover it, or the old primary still accepts writes when the new one promotes.
"""

from __future__ import annotations

import pytest

from raftpg.ha.execute import SUPERVISOR_FENCE_LATENCY_S, Timing
from raftpg.pg import supervisor
from raftpg.testing.simulation import DEFAULT_DCS_CONFIG, Simulation

# valid (ttl, loop_wait, retry_timeout): ttl >= loop_wait + 2 * retry_timeout (raftpg.config)
TIMINGS = [(5, 1, 2), (10, 2, 4), (20, 5, 5), (30, 10, 10), (60, 10, 20)]



def test_the_margin_accounts_for_the_supervisors_latency() -> None:
    assert SUPERVISOR_FENCE_LATENCY_S >= supervisor.POLL_S + supervisor.KILL_AFTER_S
    for ttl, loop_wait, retry_timeout in TIMINGS:
        timing = Timing(ttl, loop_wait, retry_timeout)
        assert timing.fence_margin_s > SUPERVISOR_FENCE_LATENCY_S
        assert timing.demote_margin_s > timing.fence_margin_s  # the loop demotes before the supervisor must


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("ttl", "loop_wait", "retry_timeout"), TIMINGS)
def test_a_frozen_primary_is_fenced_before_another_node_promotes(ttl: int, loop_wait: int, retry_timeout: int,
                                                                  seed: int) -> None:
    """Regression: the margin was 0.5 s + 2% of the TTL, under the supervisor's 1.05 s worst case for
    any TTL below 27.5 s; with ttl 10 or 20 the old primary still accepted writes at the promotion."""
    timing = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout}
    sim = Simulation(seed, dcs_config={**DEFAULT_DCS_CONFIG, **timing},
                     fence_latency_s=supervisor.POLL_S + supervisor.KILL_AFTER_S)
    sim.add_node("n1")
    sim.run(10)
    sim.add_node("n2")
    sim.add_node("n3")
    sim.run(3 * ttl)
    assert sim.leader() == "n1", sim.tail()
    sim.write("primary", 5)
    sim.run(1)
    sim.freeze("n1")
    sim.run(2 * ttl)  # the checker raises SafetyViolation at the first instant of overlap
    assert sim.pg("n1").fenced_count == 1
    assert sim.leader() in ("n2", "n3") and sim.writable() == [sim.leader()]
    assert not sim.lost()
