"""The members' REST APIs in the simulation (quorum commit's votes): a candidate's ``GET /patroni`` to each
member is answered from that member's fake PostgreSQL as it is now, unless the asker or the member is
partitioned, or the member's agent is dead or frozen (its API with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftpg.model import PeerAnswer

if TYPE_CHECKING:
    from raftpg.testing.simulation import Simulation


class SimPeers:
    def __init__(self, sim: Simulation, me: str) -> None:
        self.sim, self.me = sim, me

    def positions(self, members: tuple[tuple[str, str], ...], timeout_s: float) -> tuple[PeerAnswer, ...]:
        cut = self.sim.network.cut
        answers = []
        for name, _url in members:
            node = self.sim.nodes.get(name)
            if node is None or not node.active or node.pg is None or self.me in cut or name in cut:
                answers.append(PeerAnswer(name, error="no answer (simulated)"))
                continue
            local = node.pg.observe()
            if not local.running:
                answers.append(PeerAnswer(name, error="no running PostgreSQL (simulated)"))
                continue
            answers.append(PeerAnswer(name, in_recovery=local.in_recovery, lsn=local.lsn, timeline=local.timeline))
        return tuple(answers)
