"""failsafe_mode's rules (raftpg.ha.failsafe) through ``decide``, by table; then the loop's side of the
bargain (a member that accepted a request holds back) with a real HaLoop on the in-memory DCS."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_decide import (
    ME,
    NOW,
    RACE,
    UNOBSERVABLE,
    config,
    inputs,
    member,
    replica,
    running_primary,
    view,
)

from raftpg.clock import FakeClock
from raftpg.dcs.base import DcsError
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha import actions as act
from raftpg.ha import failsafe
from raftpg.ha.decide import DEMOTE_STOP_S, decide
from raftpg.ha.inputs import FailsafeSeen, Inputs, Me, Memory
from raftpg.ha.loop import HaLoop
from raftpg.model import ClusterView
from raftpg.testing.fake_postgres import FakePostgres, PgNetwork

TTL = 30  # config()'s default ttl
ON = config(failsafe_mode=True, postgresql={"use_pg_rewind": True})
TOPOLOGY = (("n1", "http://n1:8008"), (ME, "http://n2:8008"), ("n3", "http://n3:8008"))
RAFT = "not available with the embedded Raft"
LONG_AGO = FailsafeSeen(agent_started=NOW - 10 * TTL)


def api(name: str) -> str:
    return dict(TOPOLOGY)[name]


def me(refusal: str | None = None) -> Me:
    return Me(ME, conn_url=f"postgresql://{ME}:5432/postgres", api_url=api(ME), failsafe_refusal=refusal)


def given(v: ClusterView | None, local: Any, *, seen: FailsafeSeen = LONG_AGO, refusal: str | None = None,
          members: tuple[tuple[str, str], ...] | None = TOPOLOGY, **kw: Any) -> Inputs:
    base = inputs(v, local, me=me(refusal), **kw)
    return replace(base, failsafe=seen, memory=replace(base.memory, failsafe_members=members))


def race(**extra: Any) -> ClusterView:
    """The leader key is free (it expired) and n2 is the healthiest: it would promote."""
    return replace(RACE, **{"config": ON, "failsafe": TOPOLOGY, **extra})


PRIMARY_CUT_OFF = dict(lease=NOW + 10)  # the DCS cannot be read; the lease has 10 s left
WITHIN_MARGIN = dict(lease=NOW + 1.5)   # demote_margin_s is 2.0 in these inputs

CASES: list[tuple[str, Inputs, tuple[Any, ...]]] = [
    ("DCS unreachable, primary, failsafe topology names me: ask every other member",
     given(None, running_primary(), **PRIMARY_CUT_OFF),
     (act.AskFailsafe((("n1", api("n1")), ("n3", api("n3")))),)),
    ("... failsafe_mode off (no topology remembered): wait out the lease, as before",
     given(None, running_primary(), members=None, **PRIMARY_CUT_OFF), ()),
    ("... a topology without me (it was published by another primary): no asking, demote on time",
     given(None, running_primary(), members=(("n1", api("n1")), ("n3", api("n3"))), **PRIMARY_CUT_OFF), ()),
    ("... the lease within the demotion margin: stop, whatever the members would say (their word came too "
     "late to extend it)",
     given(None, running_primary(), **WITHIN_MARGIN),
     (act.StopPostgres("fast", "cannot renew the leader lease", DEMOTE_STOP_S),)),
    ("... an unobservable postmaster is no primary the members can vouch for: demoted on its schedule",
     given(view(leader=ME, config=ON, failsafe=TOPOLOGY), UNOBSERVABLE, lease=NOW + 1.5),
     (act.StopPostgres, act.ReleaseLeaderKey)),
    ("... nor while the DCS is unreachable: an unobservable postmaster is not asked for (the lease runs out)",
     given(None, UNOBSERVABLE, **PRIMARY_CUT_OFF), ()),
    ("a single-node topology: nobody else to ask (vacuously kept)",
     given(None, running_primary(), members=((ME, api(ME)),), **PRIMARY_CUT_OFF), (act.AskFailsafe(()),)),
    ("a replica cut off from the DCS does nothing, failsafe or not",
     given(None, replica(), **PRIMARY_CUT_OFF), ()),
    ("free leader key, failsafe on, no request heard, agent up for long: the healthiest races",
     given(race(), replica(), lease=None), (act.AcquireLeaderKey, act.Promote)),
    ("... a primary asked (POST /failsafe) 5 s ago: not racing (it may still be writing)",
     given(race(), replica(), seen=replace(LONG_AGO, asked_by="n1", asked_at=NOW - 5)), ()),
    ("... asked ttl ago: its lease has run out, race again",
     given(race(), replica(), seen=replace(LONG_AGO, asked_by="n1", asked_at=NOW - TTL)),
     (act.AcquireLeaderKey, act.Promote)),
    ("... this agent started less than ttl ago: a request may have come before it listened",
     given(race(), replica(), seen=FailsafeSeen(agent_started=NOW - 3)), ()),
    ("... not in the published topology: nobody asked me, so nobody counts on me; no race",
     given(race(failsafe=(("n1", api("n1")), ("n3", api("n3")))), replica()), ()),
    ("... failsafe_mode off: the same request heard is no reason to hold back",
     given(replace(race(), config=config(postgresql={"use_pg_rewind": True})), replica(),
           seen=replace(LONG_AGO, asked_by="n1", asked_at=NOW - 5)), (act.AcquireLeaderKey, act.Promote)),
    ("... on the embedded Raft failsafe_mode is refused: a stored failsafe_mode: true changes nothing",
     given(race(), replica(), seen=replace(LONG_AGO, asked_by="n1", asked_at=NOW - 5), refusal=RAFT),
     (act.AcquireLeaderKey, act.Promote)),
]


@pytest.mark.parametrize(("what", "given_", "expected"), CASES, ids=[c[0] for c in CASES])
def test_failsafe_decisions(what: str, given_: Inputs, expected: tuple[Any, ...]) -> None:
    actions = decide(given_).actions
    assert len(actions) >= len(expected), (what, actions)
    for wanted, got in zip(expected, actions, strict=False):
        assert got == wanted if not isinstance(wanted, type) else isinstance(got, wanted), (what, actions)
    if not expected:
        assert actions == (), (what, actions)


def test_the_primary_publishes_its_topology_only_with_failsafe_on() -> None:
    members = (member("n1", api_url=api("n1")), member(ME, role="primary", state="running", api_url=api(ME)),
               member("n3", api_url=api("n3")), member("w1", api_url="http://w1:8008", witness=True),
               member("n4"))  # no REST API known: cannot be asked, so not in the topology (it may not race)

    def published(cfg: Any, refusal: str | None = None) -> Any:
        v = view(leader=ME, members=members, config=cfg)
        position = next(a for a in decide(given(v, running_primary(), refusal=refusal, lease=NOW + 20)).actions
                        if isinstance(a, act.PublishPosition))
        return position.failsafe

    assert published(ON) == TOPOLOGY, "every data member with a REST API, witnesses left out"
    assert published(config()) is None
    assert published(ON, refusal=RAFT) is None


def test_the_remembered_topology_survives_an_unreadable_dcs_and_goes_with_failsafe_off() -> None:
    on = view(config=ON, failsafe=TOPOLOGY)
    assert failsafe.remembered(on, me(), None) == TOPOLOGY
    assert failsafe.remembered(None, me(), TOPOLOGY) == TOPOLOGY
    assert failsafe.remembered(view(config=config()), me(), TOPOLOGY) is None
    assert failsafe.remembered(on, me(RAFT), TOPOLOGY) is None


def test_memory_default_has_no_topology() -> None:
    assert Memory().failsafe_members is None


# ----------------------------------------------------------------------------- the loop, three nodes


class CutOff:
    """A DCS this node cannot reach while ``down`` (every call raises DcsError; watch says nothing)."""

    def __init__(self, dcs: Any) -> None:
        self.dcs, self.down = dcs, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.dcs, name)
        if not callable(attr) or not self.down:
            return attr

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            if name == "watch":
                return False
            raise DcsError(f"{name}: cut off")
        return unreachable


class LoopPeers:
    """The other members' side of POST /failsafe, straight to their real HaLoops (the HTTP hop is tested
    on real agents in tests/integration/test_failsafe_cluster.py); ``dead`` members do not answer."""

    def __init__(self, loops: dict[str, HaLoop]) -> None:
        self.loops, self.dead, self.asked = loops, set[str](), 0

    def ask(self, members: Any, request: Any, timeout_s: float) -> dict[str, str | None]:
        self.asked += 1
        answers: dict[str, str | None] = {}
        for name, _ in members:
            loop = self.loops[name]
            answers[name] = "connection refused" if name in self.dead else \
                loop.failsafe_request(request["name"], bool(loop.pg and loop.pg.observe().is_primary))
        return answers


def three_nodes() -> tuple[FakeClock, PgNetwork, CutOff, dict[str, HaLoop], LoopPeers]:
    clock = FakeClock()
    network = PgNetwork(clock)
    shared = memory_dcs(clock, KeyLayout("/service/", "t"))
    n1_dcs = CutOff(shared)
    loops: dict[str, HaLoop] = {}
    peers = LoopPeers(loops)
    for name in ("n1", "n2", "n3"):
        me_ = Me(name, conn_url=f"postgresql://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni")
        loops[name] = HaLoop(dcs=n1_dcs if name == "n1" else shared, pg=FakePostgres(name, network, clock),
                             watchdog=None, clock=clock, me=me_, version="test", failsafe_peers=peers,
                             bootstrap_dcs={"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "failsafe_mode": True})
    return clock, network, n1_dcs, loops, peers


def step(clock: FakeClock, network: PgNetwork, loops: dict[str, HaLoop]) -> list[str]:
    loops["n2"].dcs.kv.expire_due()  # type: ignore[attr-defined] - the in-memory store plays the Raft leader
    for loop in loops.values():
        loop.cycle()
    network.step()
    clock.advance(1)
    writers = [pg.name for pg in network.writable()]
    assert len(writers) <= 1, f"two primaries accept writes: {writers}"
    return writers


def settle(clock: FakeClock, network: PgNetwork, loops: dict[str, HaLoop]) -> Any:
    """Cycle until n1 is the primary, both replicas stream and n1 remembers the topology it published;
    return the view (at most 40 cycles)."""
    for _ in range(40):
        step(clock, network, loops)
        view = loops["n2"].dcs.load(timeout_s=1)
        if view.failsafe and len(view.failsafe) == 3 and loops["n1"].memory.failsafe_members == view.failsafe \
                and all(loops[n].pg.observe().streaming for n in ("n2", "n3")):  # type: ignore[union-attr]
            break
    return view


def test_a_primary_cut_off_from_the_dcs_is_kept_while_every_member_accepts_and_demotes_when_one_does_not():
    clock, network, n1_dcs, loops, peers = three_nodes()
    view = settle(clock, network, loops)
    assert view.failsafe == (("n1", "http://n1:8008/patroni"), ("n2", "http://n2:8008/patroni"),
                             ("n3", "http://n3:8008/patroni"))
    assert loops["n1"].pg.observe().is_primary  # type: ignore[union-attr]

    n1_dcs.down = True
    for _ in range(30):  # three TTLs: without failsafe n1 would have demoted within the first
        assert step(clock, network, loops) == ["n1"]
    assert peers.asked >= 20 and loops["n1"].status.extra["failsafe_mode_is_active"]
    assert loops["n2"].dcs.load(timeout_s=1).leader is None, "the leader key expired meanwhile"
    assert "failsafe_mode: n1 asked" in loops["n2"].status.decision
    assert loops["n2"].status.extra["failsafe_mode_is_active"]

    peers.dead.add("n3")  # n3's agent stops answering: n1 can no longer count on everyone
    writers: list[str] = ["n1"]
    for seconds in range(1, 40):
        writers = step(clock, network, loops)
        if writers == ["n1"]:
            assert seconds < 10, "n1 kept writing past the lease its last accepted round gave it"
        elif writers:
            break
    assert writers and writers[0] in ("n2", "n3"), "a replica took over once n1 had stopped"
    assert not loops["n1"].pg.observe().is_primary  # type: ignore[union-attr]


class Freezing(CutOff):
    """A DCS that freezes (as a SIGSTOPped etcd) right after this node's next read: from then on every call
    waits out its whole timeout on the fake clock, then fails."""

    def __init__(self, dcs: Any, clock: FakeClock) -> None:
        super().__init__(dcs)
        self.clock, self.freeze_after_read = clock, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.dcs, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.clock.advance(float(kwargs.get("timeout_s", args[-1] if name == "watch" else 0.0)))
                if name == "watch":
                    return False
                raise DcsError(f"{name}: no answer in time")
            result = attr(*args, **kwargs)
            if name == "load" and self.freeze_after_read:
                self.down, self.freeze_after_read = True, False
            return result
        return call


def test_a_dcs_that_freezes_between_the_read_and_the_renewal_still_leaves_time_to_ask_the_members():
    """Found on a real etcd (test_failsafe_cluster): etcd froze after the primary's read and before its
    renewal; the renewal waited out its whole budget, up to the demotion point, so the next cycle could
    only demote, and the primary stopped 4.4 s into the outage without asking anyone. The renewal keeps
    the failsafe round's time in reserve, as the read already did."""
    clock, network, _cut, loops, peers = three_nodes()
    freezing = Freezing(loops["n1"].dcs.dcs, clock)  # type: ignore[attr-defined]
    loops["n1"].dcs = freezing  # type: ignore[assignment]
    loops["n1"].executor.dcs = freezing  # type: ignore[assignment]
    settle(clock, network, loops)
    assert loops["n1"].memory.failsafe_members and loops["n1"].pg.observe().is_primary  # type: ignore[union-attr]

    freezing.freeze_after_read = True
    for _ in range(30):  # three TTLs
        assert step(clock, network, loops) == ["n1"]
    assert peers.asked >= 10 and loops["n1"].status.extra["failsafe_mode_is_active"]
