"""Network faults: partitions of every shape (nftables cuts, see ``topology``) and random packet loss.

Each fault installs its cuts in a topology layer of its own (``<name>-<step>``), so overlapping faults
compose and ``stop`` removes only its own. ``verify`` probes with UDP (TCP connects for ``ct state new``
cuts): every cut direction drops, and a sample of the links no fault touches still delivers.
Latency is not offered: this kernel has no ``sch_netem`` (``tc qdisc add ... netem`` answers
"Specified qdisc kind is unknown"), and a delay faked any other way would not be what production sees.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from jepsen_lite.nemesis_base import Fault, FaultError
from jepsen_lite.topology import Cut


class Partition(Fault):
    shape: ClassVar[str] = ""

    @property
    def layer(self) -> str:
        return f"{self.name}-{self.step.index}"

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        raise NotImplementedError

    def start(self) -> dict[str, Any]:
        cuts, details = self.cuts()
        if not cuts:
            raise FaultError("the partition would cut nothing")
        self.applied = cuts
        self.env.topology.apply(cuts, self.layer)
        return {**details, "cuts": sorted(c.describe() for c in cuts)}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        topo, names = self.env.topology, self.env.topology.names
        touched = topo.touched()
        allowed = [(a, b) for a in names for b in names if a != b and (a, b) not in touched]
        probes: list[tuple[str, Cut | None, str, str]] = [("blocked", c, c.src, c.dst) for c in self.applied]
        probes += [("allowed", None, a, b) for a, b in allowed[:4]]
        results: dict[int, bool] = {}

        def probe(i: int, kind: str, cut: Cut | None, src: str, dst: str) -> None:
            if cut is not None and cut.mode == "new":
                results[i] = topo.tcp_connects(src, dst)
            else:
                results[i] = topo.udp_delivers(src, dst, tries=2, wait_s=0.25)

        _parallel([(probe, (i, *p)) for i, p in enumerate(probes)])
        failures = []
        for i, (kind, cut, src, dst) in enumerate(probes):
            delivered = results.get(i)
            if delivered is None or delivered != (kind == "allowed"):
                failures.append(f"{kind} {src}->{dst} delivered={delivered}")
            if cut is not None and cut.mode == "new" and (dst, src) not in topo.full_cuts() \
                    and not topo.tcp_connects(dst, src):
                failures.append(f"one-way (new) {dst}->{src} should connect but did not")
        evidence = {"probes": len(probes), "failures": failures}
        return not failures, evidence

    def stop(self) -> dict[str, Any]:
        self.env.topology.heal(self.layer)
        return {}


def _parallel(calls: Sequence[tuple[Any, tuple[Any, ...]]], timeout_s: float = 10.0) -> None:
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)


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


def both_ways(group_a: Sequence[str], group_b: Sequence[str], loss_pct: int = 0) -> frozenset[Cut]:
    return frozenset([Cut(a, b, loss_pct=loss_pct) for a in group_a for b in group_b]
                     + [Cut(b, a, loss_pct=loss_pct) for a in group_a for b in group_b])


class Halves(Partition):
    name = "partition-halves"

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        names = list(self.env.topology.names)
        self.env.rng.shuffle(names)
        small, big = names[: len(names) // 2], names[len(names) // 2:]
        return both_ways(small, big), {"halves": [sorted(small), sorted(big)]}


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
        return both_ways(rest[:half], rest[half:]), {"bridge": bridge, "sides": [rest[:half], rest[half:]]}


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


class PacketLoss(Partition):
    """Every node-to-node link (both ways; or only the links of one node) drops packets at random.

    Verified by measurement: 200 numbered UDP datagrams over two cut links, the observed loss must be
    within 15 points of the rate (3 standard deviations at 200 samples) and above zero."""

    name = "packet-loss"
    TOLERANCE = 0.15

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(ttl_s, 3 * ttl_s), {"loss_pct": rng.choice([10, 20, 30, 50, 70]),
                                               "scope": rng.choice(["all", "all", "primary", "random"])}

    def cuts(self) -> tuple[frozenset[Cut], dict[str, Any]]:
        names, scope = list(self.env.topology.names), self.params.get("scope", "all")
        self.loss_pct = int(self.params.get("loss_pct", 30))
        if scope == "all":
            cuts = frozenset(Cut(a, b, loss_pct=self.loss_pct) for a in names for b in names if a != b)
            return cuts, {"loss_pct": self.loss_pct, "scope": "all links"}
        victim = self.resolve(scope)
        return both_ways([victim], [n for n in names if n != victim], self.loss_pct), \
            {"loss_pct": self.loss_pct, "victim": victim}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        topo = self.env.topology
        full = topo.full_cuts()
        links = sorted((c.src, c.dst) for c in self.applied if (c.src, c.dst) not in full)[:2]
        if not links:
            return False, {"failures": ["every lossy link is also fully cut by another fault"]}
        measured = [topo.udp_loss(a, b, count=200) for a, b in links]
        expected = self.loss_pct / 100
        ok = all(m > 0 and abs(m - expected) <= self.TOLERANCE for m in measured)
        return ok, {"links": [f"{a}->{b}" for a, b in links], "measured_loss": [round(m, 3) for m in measured],
                    "expected_loss": expected}
