"""Poisoned documents written straight into every backend, then the real HA loop cycles on them.

For each backend (memory, the embedded Raft, a real etcd, the Consul fake) and each key kind, a healthy
cluster of three real ``HaLoop`` instances on ``FakePostgres`` (n1 primary, n2 and n3 streaming replicas)
gets one poisoned value at a time written around the DCS port (``Backend.raw_put``). The loops then
cycle: no cycle may raise, the primary keeps its key and keeps accepting writes (except when the poison
*is* the leader key: then someone else holds it as far as anyone can tell), no replica promotes, and the
poison is seen (``ClusterView.problems``). Then the good value is restored (or the key deleted) and the
cluster must be back to normal: one primary holding the key, two streaming replicas, no problems.

Replicas cycle before the primary in each round, so that they read a poison the primary repairs
(status, failover) before it does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dcs_backends import BACKENDS, Backend

from raftpg.clock import Clock, FakeClock, SystemClock
from raftpg.consensus.api import KvRejected
from raftpg.dcs import keys
from raftpg.ha.actions import AcquireLeaderKey, Decision, Promote
from raftpg.ha.inputs import Me
from raftpg.ha.loop import HaLoop
from raftpg.model import DynamicConfig
from raftpg.testing.fake_postgres import FakePostgres, PgNetwork, host_of

NAMES = ("n1", "n2", "n3")
BOOTSTRAP_DCS = {"ttl": 30, "loop_wait": 1, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
                 "postgresql": {"use_pg_rewind": True, "use_slots": True}}
DEEP = "[" * 100_000 + "]" * 100_000
TOKENS = {"1e999": "1e999", "NaN": "NaN", "400 digits": "1" * 400, "100k-deep": DEEP}


def embedded(template: str) -> dict[str, str | bytes]:
    return {name: template % token for name, token in TOKENS.items()}


# key -> poison name -> stored value (bytes: invalid UTF-8, which the KV stores refuse to hold)
POISON: dict[str, dict[str, str | bytes]] = {
    "members/n3": {**embedded('{"role":"replica","state":"streaming","xlog_location":%s}'),
                   "invalid UTF-8": b'{"role":"replica","state":"streaming\xff"}',
                   "wrong type": '{"role":"replica","state":"streaming","xlog_location":"abc","tags":[]}'},
    "config": {**embedded('{"ttl":%s,"loop_wait":1,"retry_timeout":5}'),
               "invalid UTF-8": b'{"ttl":30,"loop_wait":1,"retry_timeout":5,"x":"\xff"}',
               "wrong type": '{"ttl":"thirty","loop_wait":1,"retry_timeout":5}',
               "ttl 10^400 as digits in a string": '{"ttl":"' + "1" * 400 + '","loop_wait":1,"retry_timeout":5}',
               "not an object": "[30, 1, 5]"},
    "failover": {**embedded('{"leader":"n1","member":%s}'), "invalid UTF-8": b'{"leader":"n1","member":"n\xff"}',
                 "wrong type": '{"leader":"n1","member":{"name":"n2"},"scheduled_at":1e300}'},
    "sync": {**embedded('{"leader":"n1","sync_standby":%s}'), "invalid UTF-8": b'{"leader":"n1\xff"}',
             "wrong type": '{"leader":"n1","sync_standby":5}'},
    "status": {**embedded('{"optime":%s}'), "invalid UTF-8": b'{"optime":"\xff"}', "wrong type": '{"optime":"x"}'},
    "history": {**embedded('[[%s,0,"x",0,"n1"]]'), "invalid UTF-8": b'[[1,0,"\xff",0,"n1"]]',
                "wrong type": '{"timeline":1}'},
    "initialize": {**TOKENS, "invalid UTF-8": b"73\xff", "wrong type": '{"sysid":1}'},
    "leader": {"invalid UTF-8": b"n1\xff", "control character": "n1\n", "200 characters": "x" * 200,
               "100k-deep": DEEP},
}


@dataclass
class Node:
    name: str
    loop: HaLoop
    pg: FakePostgres


class Trio:
    """Three HA loops on one backend, cycled in rounds by the test (no threads)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.clock: Clock = backend.clock if backend.clock is not None else SystemClock()
        self.network = PgNetwork(self.clock)
        self.nodes = {name: self._node(name) for name in NAMES}

    def _node(self, name: str) -> Node:
        me = Me(name=name, api_url=f"http://{name}:8008/patroni", conn_url=f"postgresql://{name}:5432/postgres")
        pg = FakePostgres(name, self.network, self.clock)
        dcs = self.backend.dcs()
        dcs.reader.fallback_config = DynamicConfig.from_dict(BOOTSTRAP_DCS)  # as node.build_dcs does
        loop = HaLoop(dcs=dcs, pg=pg, watchdog=None, clock=self.clock, me=me,
                      bootstrap_dcs=json.loads(json.dumps(BOOTSTRAP_DCS)), version="contract")
        return Node(name, loop, pg)

    def cycle(self, name: str) -> Decision:
        decision = self.nodes[name].loop.cycle()
        self.network.step()
        if isinstance(self.clock, FakeClock):
            self.clock.advance(0.5)
            assert self.backend.kv is not None
            self.backend.kv.expire_due()
        return decision

    def round(self, names: tuple[str, ...] = ("n2", "n3", "n1")) -> dict[str, Decision]:
        return {name: self.cycle(name) for name in names}

    def leader(self) -> str | None:
        view = self.nodes["n2"].loop.dcs.load(timeout_s=5.0)
        return view.leader.name if view.leader else None

    def problem(self) -> str | None:
        """None when one primary holds the key and the two others stream from it, with no DCS problem."""
        leader, writable = self.leader(), [pg.name for pg in self.network.writable()]
        if leader is None or writable != [leader]:
            return f"leader key {leader!r}, writable {writable}"
        for node in self.nodes.values():
            pg = node.pg
            if node.name != leader and not (pg.running and pg.in_recovery and pg.streaming
                                            and host_of(pg.upstream_url) == leader):
                return f"{node.name} does not stream from {leader}"
            view = node.loop.status.view
            if view is None or view.problems:
                return f"{node.name} sees DCS problems: {view.problems if view else 'no view'}"
        return None

    def converge(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            if self.problem() is None:
                return
            self.round()
        assert self.problem() is None, self.problem()


@pytest.fixture(params=BACKENDS)
def trio(request: pytest.FixtureRequest) -> Iterator[Trio]:
    from dcs_backends import make_backend
    backend = make_backend(request.param, request)
    try:
        cluster = Trio(backend)
        cluster.cycle("n1")  # n1 wins the bootstrap race
        cluster.converge()
        assert cluster.leader() == "n1"
        yield cluster
    finally:
        backend.close()


def good_value(trio: Trio, key: str) -> str | None:
    """The value to restore after the poison (None: delete the key; its owner writes it again)."""
    return {"initialize": trio.nodes["n1"].pg.sysid, "config": json.dumps(BOOTSTRAP_DCS), "leader": None,
            "failover": None, "sync": None, "status": None, "members/n3": None, "history": "[]"}[key]


def poison_names(key: str) -> list[str]:
    return list(POISON[key])


@pytest.mark.parametrize("key", list(POISON))
def test_poison_in_a_key_never_stops_the_loop_and_heals(trio: Trio, key: str) -> None:
    for name, value in POISON[key].items():
        what = f"{trio.backend.name}: {key} = {name}"
        try:
            trio.backend.raw_put(key, value)
        except KvRejected:
            # the embedded store holds text only: it refuses bytes that are not UTF-8 (and keeps serving)
            assert isinstance(value, bytes) and trio.backend.name in ("memory", "raft"), what
            continue
        seen = False
        for _ in range(3):
            # n3 is not cycled while its own member key is poisoned: it would rewrite it at once
            names = ("n2", "n1") if key == "members/n3" else ("n2", "n3", "n1")
            try:
                decisions = trio.round(names)
            except Exception as exc:  # noqa: BLE001 - the assertion names the poison
                raise AssertionError(f"{what}: a cycle raised {exc!r}") from exc
            for node, decision in decisions.items():
                assert not decision.has(Promote), f"{what}: {node} promoted: {decision.reason}"
                if key != "leader":
                    assert not decision.has(AcquireLeaderKey), f"{what}: {node}: {decision.reason}"
            view = trio.nodes["n2"].loop.status.view
            assert view is not None, f"{what}: n2 could not read the DCS"
            seen = seen or any(p.startswith(key) for p in view.problems)
            if key != "leader":
                assert trio.leader() == "n1", f"{what}: the primary lost its key"
                assert trio.nodes["n1"].pg.accepting_writes, f"{what}: the primary stopped accepting writes"
                assert trio.nodes["n1"].loop.timing.ttl_s == BOOTSTRAP_DCS["ttl"], what
            if key == "members/n3":
                n3 = view.member("n3")
                assert n3 is not None and not n3.valid, f"{what}: n3 reads as valid"
                assert "n3" not in [m.name for m in view.eligibility_view().failover_candidates()]
        assert seen, f"{what}: no node reported the poison (was it written where the loop reads?)"
        good = good_value(trio, key)
        if good is None:
            trio.backend.raw_delete(key)
        else:
            trio.backend.raw_put(key, good)
        trio.converge()
        if key != "leader":
            assert trio.leader() == "n1", f"{what}: the primary changed"


def test_a_node_whose_first_config_read_is_poisoned_runs_on_its_bootstrap_dcs(trio: Trio) -> None:
    trio.backend.raw_put(keys.CONFIG, '{"ttl":1e999,"loop_wait":1,"retry_timeout":5}')
    fresh = HaLoop(dcs=trio.backend.dcs(), pg=None, watchdog=None, clock=trio.clock,
                   me=Me(name="w4", witness=True), bootstrap_dcs={"ttl": 12, "loop_wait": 1, "retry_timeout": 3},
                   version="contract")
    fresh.dcs.reader.fallback_config = DynamicConfig.from_dict({"ttl": 12, "loop_wait": 1, "retry_timeout": 3})
    fresh.cycle()
    assert fresh.timing.ttl_s == 12
    view = fresh.status.view
    assert view is not None and any("bootstrap.dcs from the local config file" in p for p in view.problems)
    trio.round()
    assert trio.nodes["n1"].loop.timing.ttl_s == BOOTSTRAP_DCS["ttl"], "running nodes keep the last good config"
    fresh.dcs.close()


def test_a_poisoned_member_is_never_promoted(trio: Trio) -> None:
    """n3's key claims a far higher WAL position, in a form nobody can read: when the primary dies, n2
    (not n3, which is frozen with its poisoned key) is promoted."""
    trio.backend.raw_put("members/n3", '{"role":"replica","state":"streaming","xlog_location":1e999,'
                                       '"conn_url":"postgresql://n3:5432/postgres"}')
    trio.nodes["n1"].pg.crash()  # n1's machine died: its agent cycles no more, its keys ran out
    trio.backend.raw_delete(keys.LEADER)
    trio.backend.raw_delete("members/n1")
    for _ in range(10):
        decisions = trio.round(("n2",))
        if trio.leader() is not None:
            break
    assert trio.leader() == "n2", decisions["n2"].reason
    assert trio.nodes["n2"].pg.accepting_writes


def test_a_member_key_whose_name_is_not_utf8(trio: Trio) -> None:
    """A key ``members/n\\xff`` (etcd and Consul store bytes; the embedded store refuses it) reads as an
    invalid member with a name nobody has; the loops keep cycling and nothing changes hands."""
    try:
        trio.backend.raw_put("members/n\udcff", '{"role":"replica","state":"streaming","xlog_location":1}')
    except KvRejected:
        assert trio.backend.name in ("memory", "raft")
        return
    for _ in range(3):
        decisions = trio.round()
        assert not any(d.has(Promote) for d in decisions.values())
        assert trio.leader() == "n1" and trio.nodes["n1"].pg.accepting_writes
    view = trio.nodes["n2"].loop.status.view
    assert view is not None
    odd = [m for m in view.members if m.name not in NAMES]
    assert len(odd) == 1 and not odd[0].valid and "\ufffd" in odd[0].name, view.members
    assert any(p.startswith("members/n\ufffd") for p in view.problems), view.problems
    trio.backend.raw_delete("members/n\udcff")
    trio.converge()
