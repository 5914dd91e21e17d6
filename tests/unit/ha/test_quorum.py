"""Quorum commit (raftpg.ha.quorum): the setting's parser, the planner's steps by table, the failover
candidate's vote count by table, and a model checked by hypothesis: whatever the standbys do and whenever
the primary plans, every acknowledged commit is held by any set of voters a candidate could gather."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftpg.api.peers import answer_of
from raftpg.ha.actions import AcquireLeaderKey, Promote, SetSynchronousStandbys, WriteSyncKey
from raftpg.ha.decide import decide
from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
from raftpg.ha.quorum import (
    ONLY_LEADER,
    KeyState,
    Standbys,
    covered,
    parse,
    plan_quorum,
    required,
    stronger_or_equal,
    value_of,
    vote_problem,
)
from raftpg.model import (
    ClusterView,
    DataDir,
    DynamicConfig,
    Leader,
    LocalState,
    Member,
    PeerAnswer,
    ReplicationRow,
    SyncState,
    Tags,
)

ME = "p"


# ------------------------------------------------------------------------------------------ the setting

@pytest.mark.parametrize("value, expected", [
    ("", Standbys(0, frozenset())),
    ("*", Standbys(1, None)),
    ('ANY 2 ("a", "b", "c")', Standbys(2, frozenset({"a", "b", "c"}))),
    ('FIRST 1 ("a", "b")', Standbys(1, frozenset({"a", "b"}))),
    ("2 (a, B)", Standbys(2, frozenset({"a", "b"}))),      # unquoted names fold to lower case
    ("a, b", Standbys(1, frozenset({"a", "b"}))),           # a bare list: FIRST 1
    ('ANY 1 ("we""ird", plain)', Standbys(1, frozenset({'we"ird', "plain"}))),
    ("ANY 1 (a, *)", Standbys(1, None)),
    ('ANY 1 ("unterminated)', Standbys(1, None)),           # unreadable: the widest reading
])
def test_parse_reads_what_postgresql_reads(value: str, expected: Standbys) -> None:
    assert parse(value) == expected


def test_value_of_round_trips_through_parse() -> None:
    for names in [("a",), ("b", "a"), ('x"y', "z")]:
        for num in range(1, 3):
            assert parse(value_of(num, names)) == Standbys(num, frozenset(names))
    assert value_of(0, ()) == "" and value_of(1, ()) == "*"


@pytest.mark.parametrize("voters, pg, quorum", [
    ({"a", "b"}, "ANY 1 (a, b)", 1),        # 1 of 2 acknowledges: both must be heard
    ({"a", "b"}, "ANY 2 (a, b)", 0),        # both acknowledge: either one holds everything
    ({"a", "b", "c", "d"}, "ANY 2 (a, b, c, d)", 2),
    ({"a"}, "ANY 1 (a, b)", 1),             # b alone may acknowledge: a alone proves nothing
    ({"a", "b"}, "ANY 1 (a)", 1),           # voters beyond S: any two include a
    ({"a"}, "", 1),                         # asynchronous: no voter set may promote
    ({"a"}, "*", 1),                        # any standby, perhaps not a voter
    ({"a"}, "ANY 3 (a, b)", 0),             # nothing can be acknowledged
])
def test_required_quorum(voters: set[str], pg: str, quorum: int) -> None:
    assert required(frozenset(voters), parse(pg)) == quorum


def test_strength_order() -> None:
    ab = frozenset({"a", "b"})
    assert stronger_or_equal(ONLY_LEADER, KeyState(ab, 0))
    assert not stronger_or_equal(KeyState(ab, 0), ONLY_LEADER)
    assert stronger_or_equal(KeyState(ab, 1), KeyState(frozenset({"a"}), 0))   # adding a voter with q + 1
    assert not stronger_or_equal(KeyState(ab, 0), KeyState(frozenset({"a"}), 0))
    assert not stronger_or_equal(KeyState(frozenset({"a"}), 0), KeyState(ab, 1))  # dropping one


# ------------------------------------------------------------------------------------------ the planner

def standby(name: str, flush: int, state: str = "streaming") -> ReplicationRow:
    return ReplicationRow(name, "127.0.0.1", state, "quorum", flush, flush, flush)


def cluster(names: tuple[str, ...], *, key: SyncState | None, k: int = 1, strict: bool = False,
            nosync: tuple[str, ...] = ()) -> ClusterView:
    members = tuple(Member(n, role="replica", state="streaming", lsn=100, tags=Tags(nosync=n in nosync))
                    for n in names)
    config = DynamicConfig(synchronous_mode=True, quorum_commit=True, synchronous_node_count=k,
                           synchronous_mode_strict=strict)
    return ClusterView(initialize="1", config=config, members=(Member(ME, role="primary", state="running"),
                                                               *members), sync=key)


def primary(rows: tuple[ReplicationRow, ...], ssn: str, lsn: int = 100) -> LocalState:
    return LocalState(running=True, in_recovery=False, lsn=lsn, replication=rows, synchronous_standby_names=ssn)


def key(voters: tuple[str, ...], quorum: int, leader: str = ME) -> SyncState:
    return SyncState(leader=leader, sync_standby=voters, quorum=quorum, revision=7)


PLANS = [
    # (what, view, local, safe_lsn, expected actions)
    ("no key: name myself alone first", cluster(("a",), key=None), primary((standby("a", 100),), ""), None,
     (WriteSyncKey((), None, 0),)),
    ("another leader's key: mine first", cluster(("a",), key=key(("a",), 0, leader="old")),
     primary((standby("a", 100),), "*"), None, (WriteSyncKey((), 7, 0),)),
    ("alone, a standby streams: PostgreSQL first", cluster(("a",), key=key((), 0)), primary((standby("a", 90),), ""),
     None, (SetSynchronousStandbys('ANY 1 ("a")'),)),
    ("then the key, once a flushed past the safe position", cluster(("a",), key=key((), 0)),
     primary((standby("a", 100),), 'ANY 1 ("a")'), 100, (WriteSyncKey(("a",), 7, 0),)),
    ("not before", cluster(("a",), key=key((), 0)), primary((standby("a", 99),), 'ANY 1 ("a")'), 100, ()),
    ("nor while the safe position is unknown", cluster(("a",), key=key((), 0)),
     primary((standby("a", 100),), 'ANY 1 ("a")'), None, ()),
    ("a second standby: the key first, with quorum 1 (a stronger key: no wait)",
     cluster(("a", "b"), key=key(("a",), 0)), primary((standby("a", 100), standby("b", 10)), 'ANY 1 ("a")'),
     None, (WriteSyncKey(("a", "b"), 7, 1),)),
    ("then PostgreSQL", cluster(("a", "b"), key=key(("a", "b"), 1)),
     primary((standby("a", 100), standby("b", 10)), 'ANY 1 ("a")'), None,
     (SetSynchronousStandbys('ANY 1 ("a", "b")'),)),
    ("settled", cluster(("a", "b"), key=key(("a", "b"), 1)),
     primary((standby("a", 100), standby("b", 10)), 'ANY 1 ("a", "b")'), 50, ()),
    ("b stops streaming: PostgreSQL first", cluster(("a", "b"), key=key(("a", "b"), 1)),
     primary((standby("a", 100), standby("b", 10, "stopping")), 'ANY 1 ("a", "b")'), 50,
     (SetSynchronousStandbys('ANY 1 ("a")'),)),
    ("then the key, once a holds what b may have acknowledged", cluster(("a", "b"), key=key(("a", "b"), 1)),
     primary((standby("a", 100),), 'ANY 1 ("a")'), 100, (WriteSyncKey(("a",), 7, 0),)),
    ("the last standby goes (non-strict): the key names me alone first", cluster(("a",), key=key(("a",), 0)),
     primary((), 'ANY 1 ("a")'), 100, (WriteSyncKey((), 7, 0),)),
    ("then asynchronous", cluster(("a",), key=key((), 0)), primary((), 'ANY 1 ("a")'), 100,
     (SetSynchronousStandbys(""),)),
    ("strict: commits wait instead", cluster(("a",), key=key((), 0), strict=True), primary((), 'ANY 1 ("a")'), 100,
     (SetSynchronousStandbys("*"),)),
    ("synchronous_node_count 2: PostgreSQL waits for both first", cluster(("a", "b"), key=key(("a", "b"), 1), k=2),
     primary((standby("a", 100), standby("b", 100)), 'ANY 1 ("a", "b")'), 100,
     (SetSynchronousStandbys('ANY 2 ("a", "b")'),)),
    ("then one voter is enough", cluster(("a", "b"), key=key(("a", "b"), 1), k=2),
     primary((standby("a", 100), standby("b", 100)), 'ANY 2 ("a", "b")'), 100, (WriteSyncKey(("a", "b"), 7, 0),)),
    ("back to 1: the key first", cluster(("a", "b"), key=key(("a", "b"), 0), k=1),
     primary((standby("a", 100), standby("b", 100)), 'ANY 2 ("a", "b")'), 100, (WriteSyncKey(("a", "b"), 7, 1),)),
    ("a standby replaced: voters widened before PostgreSQL changes",
     cluster(("a", "c"), key=key(("a",), 0)), primary((standby("c", 100),), 'ANY 1 ("a")'), 100,
     (WriteSyncKey(("a", "c"), 7, 1),)),
    ("then PostgreSQL names c", cluster(("a", "c"), key=key(("a", "c"), 1)), primary((standby("c", 100),), 'ANY 1 ("a")'),
     100, (SetSynchronousStandbys('ANY 1 ("c")'),)),
    ("then a leaves the key once c holds what a acknowledged", cluster(("a", "c"), key=key(("a", "c"), 1)),
     primary((standby("c", 120),), 'ANY 1 ("c")'), 110, (WriteSyncKey(("c",), 7, 0),)),
    ("a key kept from synchronous mode (FIRST 1, one name): made safe first",
     cluster(("a", "b"), key=key(("a",), 0)), primary((standby("a", 100), standby("b", 100)), 'FIRST 1 ("a", "b")'),
     100, (WriteSyncKey(("a", "b"), 7, 1),)),
    ("nosync standbys never vote", cluster(("a", "b"), key=key(("a",), 0), nosync=("b",)),
     primary((standby("a", 100), standby("b", 100)), 'ANY 1 ("a")'), 100, ()),
]


@pytest.mark.parametrize("what, view, local, safe_lsn, expected", PLANS, ids=[p[0] for p in PLANS])
def test_plan(what: str, view: ClusterView, local: LocalState, safe_lsn: int | None, expected: tuple) -> None:
    actions, state = plan_quorum(view, local, ME, safe_lsn)
    assert actions == expected, state


# ------------------------------------------------------------------------------------------ the votes

def race_view(voters: tuple[str, ...], quorum: int, leader: str = "old") -> ClusterView:
    return cluster(("a", "b", "c"), key=key(voters, quorum, leader=leader))


VOTES = [
    ("not asked yet", race_view(("a", "b"), 1), "a", 100, None, "not been asked"),
    ("two of two voters at or behind me", race_view(("a", "b"), 1), "a", 100,
     (PeerAnswer("b", True, 100),), None),
    ("the other voter silent", race_view(("a", "b"), 1), "a", 100,
     (PeerAnswer("b", error="timeout"),), "1 of the 2 voters"),
    ("the other voter ahead", race_view(("a", "b"), 1), "a", 100,
     (PeerAnswer("b", True, 101),), "b is ahead of me"),
    ("a non-voter ahead also stops me", race_view(("a", "b"), 1), "a", 100,
     (PeerAnswer("b", True, 90), PeerAnswer("c", True, 101)), "c is ahead"),
    ("a member that may not be promoted being ahead does not stop every failover",
     replace(race_view(("a", "b"), 1), members=(Member("a", state="streaming", lsn=100),
                                                 Member("b", state="streaming", lsn=100),
                                                 Member("c", state="streaming", lsn=100, tags=Tags(nofailover=True)))),
     "a", 100, (PeerAnswer("b", True, 90), PeerAnswer("c", True, 101)), None),
    ("a primary still runs", race_view(("a", "b"), 1), "a", 100,
     (PeerAnswer("b", True, 90), PeerAnswer("old", False, 90)), "old runs as a primary"),
    ("a non-voter needs quorum + 1 voters", race_view(("a", "b"), 1), "c", 100,
     (PeerAnswer("a", True, 90), PeerAnswer("b", True, 100)), None),
    ("with one voter silent it may not", race_view(("a", "b"), 1), "c", 100,
     (PeerAnswer("a", True, 90), PeerAnswer("b", error="refused")), "1 of the 2 voters"),
    ("quorum 0: one voter (me) is enough", race_view(("a", "b"), 0), "a", 100,
     (PeerAnswer("b", error="refused"),), None),
    ("the key names its leader alone: nobody else", race_view((), 0), "a", 100,
     (PeerAnswer("b", True, 90),), "0 of the 1 voters"),
    ("the key's leader needs no votes, only nobody ahead", race_view(("a", "b"), 1, leader="a"), "a", 100,
     (PeerAnswer("b", error="refused"),), None),
]


VOTES += [
    ("the key names its leader alone, which answers behind me on my timeline: it settles it",
     race_view((), 0, leader="b"), "a", 100, (PeerAnswer("b", True, 90, 1),), None),
    ("... but not from another timeline", race_view((), 0, leader="b"), "a", 100, (PeerAnswer("b", True, 90, 2),),
     "0 of the 1 voters"),
    ("... nor when it is ahead of me", race_view((), 0, leader="b"), "a", 100, (PeerAnswer("b", True, 101, 1),),
     "b is ahead of me"),
    ("the old leader's vote also stands in for missing voters", race_view(("a", "c"), 1, leader="b"), "a", 100,
     (PeerAnswer("b", True, 100, 1), PeerAnswer("c", error="timeout")), None),
]


@pytest.mark.parametrize("what, view, me, lsn, answers, problem", VOTES, ids=[v[0] for v in VOTES])
def test_votes(what: str, view: ClusterView, me: str, lsn: int, answers: tuple[PeerAnswer, ...] | None,
               problem: str | None) -> None:
    found = vote_problem(view, me, lsn, answers, my_timeline=1)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# ------------------------------------------------------------------------------------------ the model

STANDBYS = ("a", "b", "c", "d")


@dataclass
class Model:
    """A primary, four standbys and the two settings. ``flush``: each standby's flushed position (only
    grows, kept while it is down); ``acked``: the newest commit PostgreSQL acknowledged."""

    lsn: int = 0
    flush: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STANDBYS, 0))
    streaming: set[str] = field(default_factory=lambda: set(STANDBYS))
    ssn: str = ""
    key: SyncState | None = None
    k: int = 1
    strict: bool = False
    acked: int = 0
    seen: tuple[str, int] | None = None  # the loop's memory: the setting and the position first seen with it

    def release(self) -> None:
        """PostgreSQL acknowledges every waiting commit its current setting allows."""
        pg = parse(self.ssn)
        if pg.asynchronous:
            self.acked = self.lsn
            return
        holders = [self.flush[n] for n in self.streaming if pg.names is None or n in pg.names]
        if pg.names is not None and pg.num > len(pg.names):
            return
        if len(holders) >= max(1, pg.num):
            self.acked = max(self.acked, min(self.lsn, sorted(holders, reverse=True)[max(1, pg.num) - 1]))

    def check(self) -> None:
        """Any quorum + 1 voters include one holding the newest acknowledged commit."""
        if self.key is None or not self.key.leader:
            return
        state = KeyState(frozenset(self.key.sync_standby), self.key.quorum)
        if not state.promotable:
            return
        lowest = sorted(self.flush[n] for n in state.voters)[: state.quorum + 1]
        assert max(lowest) >= self.acked, (self, "a candidate could miss an acknowledged commit")


steps = st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 3)),
    st.tuples(st.just("flush"), st.sampled_from(STANDBYS), st.integers(0, 3)),
    st.tuples(st.just("drop"), st.sampled_from(STANDBYS)),
    st.tuples(st.just("join"), st.sampled_from(STANDBYS)),
    st.tuples(st.just("plan"), st.integers(1, 2)),
    st.tuples(st.just("count"), st.integers(1, 3)),
    st.tuples(st.just("strict"), st.booleans()),
)


def _plan(m: Model, how_many: int) -> None:
    if m.seen is None or m.seen[0] != m.ssn:
        m.seen = (m.ssn, m.lsn)  # first observation with this setting (in force: reloads are instant here)
    view = ClusterView(
        initialize="1", sync=m.key,
        config=DynamicConfig(synchronous_mode=True, quorum_commit=True, synchronous_node_count=m.k,
                             synchronous_mode_strict=m.strict),
        members=(Member(ME, role="primary", state="running"),
                 *(Member(n, role="replica", state="streaming") for n in STANDBYS)))
    rows = tuple(standby(n, m.flush[n]) for n in sorted(m.streaming))
    actions, _ = plan_quorum(view, primary(rows, m.ssn, m.lsn), ME, m.seen[1])
    for action in actions[:how_many]:
        if isinstance(action, WriteSyncKey):
            m.key = SyncState(ME, action.standbys, (m.key.revision if m.key else 0) + 1, action.quorum)
        elif isinstance(action, SetSynchronousStandbys):
            m.ssn = action.value
        m.release()
        m.check()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(STANDBYS)), st.lists(steps, max_size=80))
def test_no_acknowledged_commit_is_ever_out_of_reach(first: set[str], script: list[tuple]) -> None:
    m = Model(streaming=set(first))
    for step in script:
        match step:
            case ("commit", n):
                m.lsn += n
            case ("flush", name, n):
                if name in m.streaming:
                    m.flush[name] = min(m.lsn, m.flush[name] + n)
            case ("drop", name):
                m.streaming.discard(name)
            case ("join", name):
                m.streaming.add(name)
            case ("plan", how_many):
                _plan(m, how_many)
            case ("count", k):
                m.k = k
            case ("strict", strict):
                m.strict = strict
        m.release()
        m.check()


@settings(max_examples=100, deadline=None)
@given(st.sets(st.sampled_from(STANDBYS), min_size=1), st.integers(1, 4), st.booleans())
def test_the_plan_converges_when_the_standbys_keep_up(active: set[str], k: int, strict: bool) -> None:
    """With every standby streaming and caught up, a few cycles reach the target: S = V = the standbys,
    n = min(k, |S|) (k in strict mode), q = |S| - n."""
    m = Model(streaming=set(active), k=k, strict=strict, lsn=10)
    for _ in range(8):
        for name in active:
            m.flush[name] = m.lsn
        _plan(m, 2)
    num = k if strict else min(k, len(active))
    assert parse(m.ssn) == Standbys(num, frozenset(active))
    assert m.key == replace(m.key, leader=ME, sync_standby=tuple(sorted(active)), quorum=max(0, len(active) - num))
    assert covered(KeyState(frozenset(active), m.key.quorum), parse(m.ssn))


# ------------------------------------------------------------------------------------------ in decide

SYSID = "7300000000000000001"


def _member(name: str, lsn: int, role: str = "replica") -> Member:
    return Member(name, role=role, state="streaming" if role == "replica" else "running",
                  conn_url=f"postgresql://{name}/", api_url=f"http://{name}:8008", lsn=lsn, timeline=1, sysid=SYSID)


def _race(peers: tuple[PeerAnswer, ...] | None, *, quorum_commit: bool = True, sync_quorum: int = 1,
          my_lsn: int = 100) -> Inputs:
    raw = {"synchronous_mode": "quorum" if quorum_commit else True}
    v = ClusterView(initialize=SYSID, config=DynamicConfig.from_dict(raw), leader=None,
                    members=(_member("n2", my_lsn), _member("n3", 90)), last_lsn=100, revision=10,
                    sync=SyncState("n1", ("n2", "n3"), 4, quorum=sync_quorum))
    local = LocalState(data_dir=DataDir.INITIALIZED, sysid=SYSID, running=True, in_recovery=True, timeline=1,
                       lsn=my_lsn, upstream="n1", streaming=False, cluster_state="in archive recovery")
    return Inputs(view=v, local=local, me=Me("n2", conn_url="postgresql://n2/"), lease=LeaseState(None),
                  memory=Memory(following="n1"), now=1000.0, now_wall=1.7e9, peers=peers)


def test_a_candidate_promotes_only_with_its_votes() -> None:
    refused = decide(_race(None))
    assert not refused.has(Promote) and "not been asked" in refused.reason
    behind = decide(_race((PeerAnswer("n3", True, 90), PeerAnswer("n1", error="connection refused"))))
    assert behind.has(AcquireLeaderKey) and behind.has(Promote), behind.reason
    # the new primary names itself the key's leader, alone, before promoting
    assert behind.actions[1] == WriteSyncKey((), 4, 0)
    ahead = decide(_race((PeerAnswer("n3", True, 120),)))
    # an eligible voter that answers ahead is ranked ahead by the race itself, before the votes are
    # counted (decide.as_answered); vote_problem's own "ahead" rule is tested on its own above
    assert not ahead.has(Promote) and "n3 is healthier" in ahead.reason
    silent = decide(_race((PeerAnswer("n3", error="timed out"),)))
    assert not silent.has(Promote) and "1 of the 2 voters" in silent.reason


def test_synchronous_mode_reads_a_quorum_key_as_naming_its_leader_alone() -> None:
    """A key written under quorum commit (quorum 1: n2 alone proves nothing) after a switch back to
    synchronous mode: n2 is not eligible, although the key lists it."""
    decision = decide(_race((PeerAnswer("n3", True, 90),), quorum_commit=False))
    assert not decision.has(Promote) and "not a synchronous standby" in decision.reason
    assert not decide(_race(None, quorum_commit=False, sync_quorum=0)).reason.startswith("not promoting")


def test_a_quorum_primary_plans_with_the_quorum_planner() -> None:
    raw = {"synchronous_mode": "quorum"}
    v = ClusterView(initialize=SYSID, config=DynamicConfig.from_dict(raw), leader=Leader("n2", 5),
                    members=(_member("n2", 100, "primary"), _member("n3", 100)), last_lsn=100, revision=10,
                    sync=SyncState("n2", ("n3",), 4, quorum=0))
    local = LocalState(data_dir=DataDir.INITIALIZED, sysid=SYSID, running=True, in_recovery=False, timeline=1,
                       lsn=100, cluster_state="in production", synchronous_standby_names="",
                       replication=(standby("n3", 100),))
    i = Inputs(view=v, local=local, me=Me("n2"), lease=LeaseState(1010.0), memory=Memory(), now=1000.0,
               now_wall=1.7e9)
    decision = decide(i)
    # the key names n3 but PostgreSQL is asynchronous: not covered, so the key is fixed before anything else
    assert WriteSyncKey((), 4, 0) in decision.actions, decision.reason
    assert "quorum commit" in decision.reason


def test_answers_are_read_from_patroni_documents() -> None:
    assert answer_of("a", {"state": "running", "xlog": {"received_location": 50, "replayed_location": 40},
                           "timeline": 2}) == PeerAnswer("a", True, 50, 2)
    assert answer_of("b", {"state": "running", "xlog": {"location": 70}}) == PeerAnswer("b", False, 70)
    assert answer_of("c", {"state": "stopped"}).error
    assert answer_of("d", {"state": "running", "xlog": {"received_location": None,
                                                         "replayed_location": "x"}}).error
    assert answer_of("w", {"state": "running", "witness": True, "xlog": {}}).error


def test_the_safe_position_is_taken_once_a_setting_has_been_in_force_a_while() -> None:
    """Memory.standby_names_seen: the primary's position once the setting was seen for SETTLED_S; a new
    setting starts over; no position while not the primary."""
    from raftpg.ha.memory import SETTLED_S, observed
    v = ClusterView(initialize=SYSID, leader=Leader("n2", 5), members=(_member("n2", 100, "primary"),))
    local = LocalState(data_dir=DataDir.INITIALIZED, running=True, in_recovery=False, lsn=100,
                       synchronous_standby_names='ANY 1 ("n3")')
    m = observed(Memory(), v, local, "n2", None, 10.0)
    assert m.standby_names_seen == ('ANY 1 ("n3")', 10.0, None) and m.safe_lsn is None
    m = observed(m, v, replace(local, lsn=150), "n2", None, 10.0 + SETTLED_S / 2)
    assert m.safe_lsn is None
    m = observed(m, v, replace(local, lsn=200), "n2", None, 10.0 + SETTLED_S + 0.001)
    assert m.safe_lsn == 200
    m = observed(m, v, replace(local, lsn=300), "n2", None, 20.0)
    assert m.safe_lsn == 200  # kept: the first position past the change is the one that counts
    changed = observed(m, v, replace(local, lsn=400, synchronous_standby_names=""), "n2", None, 21.0)
    assert changed.standby_names_seen == ("", 21.0, None)
    assert observed(m, replace(v, leader=Leader("n3", 6)), local, "n2", None, 22.0).standby_names_seen is None


def test_the_campaigns_deadlock_a_key_naming_the_demoted_leader_alone() -> None:
    """Campaign cell quorum-partition-s3: the key named n3 alone (right after its promotion), n3 was cut
    off and demoted, n2 was ahead of it. n3 deferred to n2 ("n2 is healthier"), n2 had no voter to ask:
    no primary for two minutes. n3's own answer, behind n2 on n2's timeline, now settles it."""
    i = _race((PeerAnswer("n3", True, 90, 1),), sync_quorum=0)
    i = replace(i, view=replace(i.view, sync=SyncState("n3", (), 4, quorum=0)))
    decision = decide(i)
    assert decision.has(Promote), decision.reason
    assert not decide(replace(i, peers=(PeerAnswer("n3", error="timed out"),))).has(Promote)
