"""Malformed DCS documents, as a table: every poison value x every key kind -> how the key is read.

A poisoned document must never raise out of a read and must never let a bad member be promoted: it
reads as an invalid member, an absent key, or a value that nobody acts on (raftpg/dcs/codec.py has the
table of what each key becomes). The cluster around the poison is healthy: n1 the primary holding the
key, n2 and n3 streaming replicas, one history row, a sync key and a status key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from dcs_poison import CASES, GOOD, LSN, REV, SYSID, WALL, Case, poisoned

from raftpg.dcs.codec import UNREADABLE, ClusterReader, cluster_from_documents, member_document
from raftpg.dcs.documents import read_member
from raftpg.ha import actions as act
from raftpg.ha.decide import decide
from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
from raftpg.kv import KvState, Rejected, decode, encode, put_command
from raftpg.model import (
    ClusterView,
    DataDir,
    DynamicConfig,
    Failover,
    HistoryEntry,
    Leader,
    LocalState,
    Member,
    SyncState,
    Tags,
)


def good_view() -> ClusterView:
    return cluster_from_documents({k: (v, REV) for k, v in GOOD.items()}, 20)


def expected_history(case: Case) -> tuple[HistoryEntry, ...]:
    """A readable history document keeps its good rows; an unreadable one (or not a list) reads as empty."""
    return (HistoryEntry(1, 33554432, "x", WALL, "n1"),) if case.id.startswith("history row") else ()


CHECKS: dict[str, Callable[[ClusterView, Case], None]] = {}


def check(prefix: str) -> Callable[[Callable[[ClusterView, Case], None]], Callable[[ClusterView, Case], None]]:
    def register(fn: Callable[[ClusterView, Case], None]) -> Callable[[ClusterView, Case], None]:
        CHECKS[prefix] = fn
        return fn
    return register


@check("members/n3")
def _member(view: ClusterView, case: Case) -> None:
    n3 = view.member("n3")
    assert n3 is not None and not n3.valid, "a poisoned member key must read as an invalid member"
    assert [m.name for m in view.members if m.valid] == ["n1", "n2"]
    assert "n3" not in [m.name for m in view.eligibility_view().failover_candidates()]


@check("members/")
def _odd_member_name(view: ClusterView, case: Case) -> None:
    odd = [m for m in view.members if m.name not in ("n1", "n2", "n3")]
    assert len(odd) == 1 and not odd[0].valid and UNREADABLE in odd[0].name
    assert odd[0].name not in [m.name for m in view.eligibility_view().failover_candidates()]


@check("config")
def _config(view: ClusterView, case: Case) -> None:
    assert view.config == DynamicConfig(), "no good config read yet and no fallback: the built-in defaults"
    assert view.config_revision == REV + 1, "the key's revision stays, so that PATCH /config can repair it"


@check("failover")
def _failover(view: ClusterView, case: Case) -> None:
    assert view.failover == Failover(leader=UNREADABLE, revision=REV + 1)


@check("sync")
def _sync(view: ClusterView, case: Case) -> None:
    assert view.sync == SyncState(leader=UNREADABLE, revision=REV + 1)
    strict = replace(view, config=DynamicConfig.from_dict({"synchronous_mode": True}), leader=None)
    assert strict.eligibility_view().failover_candidates() == (), "in synchronous mode nobody is eligible"


@check("status")
def _status(view: ClusterView, case: Case) -> None:
    if '"failsafe"' in str(case.raw):
        # a bad entry makes the whole topology unreadable, read as absent (a member left out of a topology
        # would race while the primary counts on it); the optime stands
        assert view.last_lsn in (None, 1) and view.failsafe is None, view.failsafe
        return
    if '"slots"' not in str(case.raw):
        assert view.last_lsn is None
        return
    # a bad slot entry is left out (the others and the optime stand), unless the whole document is unreadable
    assert view.last_lsn in (None, 1)
    assert view.slot_positions in ((), (("n3", 5),)), view.slot_positions


@check("history")
def _history(view: ClusterView, case: Case) -> None:
    assert view.history == expected_history(case)


@check("initialize")
def _initialize(view: ClusterView, case: Case) -> None:
    assert view.initialize == SYSID, "no last good value: the system identifier the leader's member key reports"


@check("leader")
def _leader(view: ClusterView, case: Case) -> None:
    assert view.leader is not None and view.leader.revision == REV + 1 and UNREADABLE in view.leader.name
    assert view.leader_member is None, "an unreadable holder is nobody's name"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_poisoned_key_reads_as_expected_and_leaves_the_rest_intact(case: Case) -> None:
    view = cluster_from_documents(poisoned(case), 20)
    kind = next(prefix for prefix in CHECKS if case.key == prefix or (prefix == "members/" and case.key.startswith(
        prefix) and case.key != "members/n3"))
    CHECKS[kind](view, case)
    good = good_view()
    for name in ("n1", "n2"):
        assert view.member(name) == good.member(name)
    if case.key != "leader":
        assert view.leader == Leader("n1", REV)
    if case.key != "config":
        assert view.config == good.config
    assert any(problem.startswith(case.key.split("/")[0]) for problem in view.problems), view.problems
    json.dumps([p for p in view.problems], ensure_ascii=False).encode()  # loggable and showable as UTF-8


def test_the_good_cluster_has_no_problems() -> None:
    view = good_view()
    assert view.problems == () and all(m.valid for m in view.members)
    assert view.config.ttl_s == 20 and view.initialize == SYSID and view.last_lsn == LSN
    assert view.sync == SyncState("n1", ("n2",), REV) and len(view.history) == 1


# ---------------------------------------------------------------------------------------------- memory
def test_the_last_good_config_is_kept_and_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    reader = ClusterReader(fallback_config=DynamicConfig.from_dict({"ttl": 40}))
    documents = {k: (v, REV) for k, v in GOOD.items()}
    assert reader.read(documents, 1).config.ttl_s == 20
    caplog.set_level(logging.INFO, logger="raftpg.dcs.codec")
    for revision in range(2, 6):  # the same poison, read four times: one warning
        view = reader.read({**documents, "config": ('{"ttl": 1e999}', 9)}, revision)
        assert view.config.ttl_s == 20 and view.config_revision == 9
        assert len(view.problems) == 1 and view.problems[0].endswith("using the last good config read")
    assert len([r for r in caplog.records if "config" in r.getMessage()]) == 1
    reader.read({**documents, "config": ('{"ttl": "abc"}', 10)}, 6)  # a different poison: logged again
    reader.read(documents, 7)  # repaired: one line saying so
    lines = [r.getMessage() for r in caplog.records if "config" in r.getMessage()]
    assert len(lines) == 3 and "readable again" in lines[-1], lines


def test_a_node_whose_first_config_read_is_bad_runs_on_its_bootstrap_dcs() -> None:
    fallback = DynamicConfig.from_dict({"ttl": 12, "loop_wait": 1, "retry_timeout": 3})
    view = ClusterReader(fallback).read({**{k: (v, REV) for k, v in GOOD.items()}, "config": ("NaN", 3)}, 1)
    assert view.config == fallback and view.config_revision == 3
    assert view.problems[0].startswith("config:") and "bootstrap.dcs from the local config file" in view.problems[0]


def test_initialize_and_status_keep_their_last_good_values() -> None:
    reader = ClusterReader()
    documents = {k: (v, REV) for k, v in GOOD.items()}
    reader.read(documents, 1)
    without_leader = {k: v for k, v in documents.items() if k != "leader"}
    view = reader.read({**without_leader, "initialize": ("NaN", 8), "status": ('{"optime": 1e999}', 8)}, 2)
    assert view.initialize == SYSID and view.last_lsn == LSN
    fresh = ClusterReader().read({**without_leader, "initialize": ("NaN", 8), "status": ("[]", 8)}, 2)
    assert fresh.initialize is None and fresh.last_lsn is None, "nothing to fall back on: absent"


# ---------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("raw, tags, problem", [
    ({"nofailover": True}, Tags(nofailover=True), None),
    ({"nofailover": "off", "failover_priority": "3"}, Tags(failover_priority=3), None),
    ({"failover_priority": 0}, Tags(nofailover=True, failover_priority=0), None),
    ("x", Tags(nofailover=True, failover_priority=0), "tags: must be an object"),
    ({"nofailover": "maybe"}, Tags(nofailover=True), "tags.nofailover"),
    ({"failover_priority": float("inf")}, Tags(nofailover=True, failover_priority=0), "tags.failover_priority"),
    ({"failover_priority": float("nan")}, Tags(nofailover=True, failover_priority=0), "tags.failover_priority"),
    ({"failover_priority": 10**400}, Tags(nofailover=True, failover_priority=0), "tags.failover_priority"),
    ({"nosync": [1]}, Tags(nosync=True), "tags.nosync"),
    ({"dc": "a", "rack": 3, "ssd": True}, Tags(custom=(("dc", "a"), ("rack", 3), ("ssd", True))), None),
    ({"dc": {"nested": 1}, "zone": "b"}, Tags(custom=(("zone", "b"),)), "tags.dc: must be a string"),
    ({"dc": "x" * 1025}, Tags(), "tags.dc: must be a string of at most 1024"),
    ({"weight": float("nan")}, Tags(), "tags.weight"),
    ({f"t{i:03}": i for i in range(70)}, Tags(custom=tuple((f"t{i:03}", i) for i in range(64))),
     "tags: more than 64 custom tags"),
])
def test_tags_parse(raw: Any, tags: Tags, problem: str | None) -> None:
    parsed, problems = Tags.parse(raw)
    assert parsed == tags
    assert (problems[0].startswith(problem) if problem else problems == ())
    assert Tags.from_dict(raw) == tags


@pytest.mark.parametrize("raw", [
    {"ttl": 10**400}, {"ttl": float("inf")}, {"ttl": float("nan")}, {"ttl": "1" * 400}, {"ttl": 86401},
    {"ttl": 3}, {"ttl": [30]}, {"ttl": True}, {"ttl": 25.5},
])
def test_dynamic_config_from_dict_falls_back_to_defaults_on_absurd_numbers(raw: dict[str, Any]) -> None:
    assert DynamicConfig.from_dict(raw).ttl_s == 30


# ---------------------------------------------------------------------------------------------- the store
def test_the_replicated_store_refuses_text_it_cannot_encode_and_keeps_serving() -> None:
    """A put of a lone surrogate (a ``"\\udcff"`` escape in a command's JSON) used to make ``apply`` raise
    on every replica, which stops the store: it is now refused like any malformed command."""
    state = KvState()
    for command in (put_command("/service/demo/members/n3", "x\udcff"), put_command("/service/demo/\udcff", "x")):
        assert isinstance(state.apply(decode(encode(command))), Rejected)
    assert state.revision == 0
    assert not isinstance(state.apply(decode(encode(put_command("/service/demo/leader", "n1")))), Rejected)
    assert state.revision == 1


# ---------------------------------------------------------------------------------------------- decisions
def _local(role: str) -> LocalState:
    primary = role == "primary"
    return LocalState(data_dir=DataDir.INITIALIZED, sysid=SYSID, running=True, in_recovery=not primary, timeline=1,
                      lsn=LSN, upstream=None if primary else "n1", streaming=not primary,
                      cluster_state="in production" if primary else "in archive recovery")


def _decide(view: ClusterView, name: str, role: str) -> act.Decision:
    me = Me(name, conn_url=f"postgresql://{name}:5432/postgres")
    return decide(Inputs(view=view, local=_local(role), me=me, lease=LeaseState(1030.0),
                         memory=Memory(following="n1"), now=1000.0, now_wall=WALL, demote_margin_s=2.0))


@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_on_a_poisoned_view_the_primary_keeps_its_key_and_nobody_promotes(case: Case, synchronous: bool) -> None:
    view = cluster_from_documents(poisoned(case), 20)
    if synchronous:
        view = replace(view, config=replace(view.config, synchronous_mode=True))
    primary = _decide(view, "n1", "primary")
    if case.key == "leader":  # someone else holds the key, as far as anyone can tell: step down
        assert primary.has(act.StopPostgres) and not primary.has(act.RenewLeaderKey), primary
    else:
        assert primary.has(act.RenewLeaderKey) and not primary.has(act.StopPostgres), primary
        assert not primary.has(act.Fence) and not primary.has(act.ReleaseLeaderKey), primary
    if case.key == "failover":
        assert act.ClearFailoverKey(REV + 1, "requested leader is not the primary") in primary.actions
        assert not primary.has(act.HandOverLeaderKey)
    if case.key == "sync" and synchronous:
        assert primary.has(act.WriteSyncKey), "the primary rewrites an unreadable sync key"
    for replica in ("n2", "n3"):
        decision = _decide(view, replica, "replica")
        assert not decision.has(act.Promote) and not decision.has(act.AcquireLeaderKey), decision
    free = replace(view, leader=None)  # the primary is gone: the candidates are valid members only
    assert all(m.valid for m in free.eligibility_view().failover_candidates())


def test_custom_tags_are_published_in_the_member_key_and_read_back() -> None:
    """Patroni users tag members (dc: a) for HAProxy's ?tag_dc=a and see them in patronictl list; they
    travel in the member key beside the tags raftpg acts on."""
    tags = Tags(nofailover=True, custom=(("dc", "a"), ("rack", 3)))
    document = member_document(Member("n1", role="replica", tags=tags))
    assert document["tags"] == {"nofailover": True, "failover_priority": 1, "noloadbalance": False,
                                "clonefrom": False, "nosync": False, "dc": "a", "rack": 3}
    member, problems = read_member("n1", json.dumps(document), REV)
    assert member.tags == tags and problems == ()
