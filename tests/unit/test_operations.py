"""Operator requests (switchover, failover, pause, dynamic config) against the in-memory DCS."""

from __future__ import annotations

from dataclasses import replace

import pytest

from raftpg.api.http import REFUSAL_STATUS
from raftpg.clock import FakeClock
from raftpg.consensus.memory import MemoryKv
from raftpg.dcs.base import RAFT_FAILSAFE_REFUSAL
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.kvdcs import KvDcs
from raftpg.dcs.memory import memory_dcs
from raftpg.ha import operations as ops
from raftpg.ha.operations import OperationError
from raftpg.model import Member, Tags

SYSID = "7301234567890123456"
LSN = 50_000_000
T = 5.0


def seed(dcs, *, leader="n1", config=None, members=None, sync=None, failover=None):
    assert dcs.initialize(timeout_s=T)
    dcs.set_initialize(SYSID, timeout_s=T)
    assert dcs.set_config(config if config is not None else {"ttl": 30, "loop_wait": 10}, None, timeout_s=T)
    for m in members if members is not None else default_members():
        dcs.touch_member(m, 30, timeout_s=T)
    if leader:
        assert dcs.acquire_leader(leader, 30, timeout_s=T)
    dcs.set_status(LSN, timeout_s=T)
    if sync is not None:
        dcs.set_sync(leader, sync, None, timeout_s=T)
    if failover is not None:
        assert dcs.set_failover(failover, None, timeout_s=T)
    return dcs


def m(name, role="replica", state="streaming", lsn=LSN, **kw):
    return Member(name=name, role=role, state=state, lsn=lsn, sysid=SYSID, conn_url=f"postgres://{name}:5432/x",
                  **kw)


def default_members():
    return [m("n1", "primary", "running"), m("n2"), m("n3", tags=Tags(nofailover=True)),
            m("n4", lsn=LSN - 10 * 1024 * 1024), Member("w5", role="witness", state="running", witness=True),
            m("n6", state="running")]


@pytest.fixture
def clock():
    return FakeClock(wall=1_700_000_000.0)


@pytest.fixture
def dcs(clock):
    return memory_dcs(clock, KeyLayout("/service/", "demo"))


def view(dcs):
    return dcs.load(linearizable=True, timeout_s=T)


def refusal(fn, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(OperationError) as info:
        fn(*args, **kwargs)
    return REFUSAL_STATUS[info.value.kind], info.value.message


# ------------------------------------------------------------------------------ switchover


def test_switchover_to_a_named_candidate_writes_the_failover_key(dcs, clock):
    seed(dcs)
    result = ops.request_switchover(dcs, leader="n1", candidate="n2", scheduled_at=None, now_wall=clock.wall(),
                                    timeout_s=T)
    assert result == ops.FailoverRequested("n1", "n2", None)
    failover = view(dcs).failover
    assert (failover.leader, failover.candidate, failover.scheduled_at) == ("n1", "n2", None)


def test_switchover_without_candidate_or_leader_names_the_current_leader(dcs, clock):
    seed(dcs)
    result = ops.request_switchover(dcs, leader=None, candidate=None, scheduled_at="now", now_wall=clock.wall(),
                                    timeout_s=T)
    assert result.leader == "n1" and result.candidate is None
    assert view(dcs).failover.leader == "n1"


def test_a_planned_switchover_judges_a_streaming_candidate_by_streaming_not_by_published_lag(dcs, clock):
    """Positions are published a cycle apart (a pg_basebackup's segment switch makes them differ by 16 MB
    for a cycle): a streaming candidate receives every record at the clean stop, so its lag is no reason."""
    seed(dcs)
    ops.request_switchover(dcs, leader="n1", candidate="n4", scheduled_at=None, now_wall=clock.wall(), timeout_s=T)
    assert view(dcs).failover.candidate == "n4"


@pytest.mark.parametrize("leader, candidate, expected", [
    ("n2", "n3", "n2 is not the leader (the leader is n1)"),
    ("n1", "n3", "candidate n3 is not eligible: n3 has the nofailover tag"),
    ("n1", "n9", "candidate n9 is not a member of the cluster"),
    ("n1", "n1", "candidate n1 is already the leader"),
    ("n1", "w5", "candidate w5 is not eligible: w5 is a witness"),
    ("n1", "n6", "candidate n6 is not streaming from the primary (state running)"),
])
def test_switchover_refusals_say_why(dcs, clock, leader, candidate, expected):
    seed(dcs)
    assert refusal(ops.request_switchover, dcs, leader=leader, candidate=candidate, scheduled_at=None,
                   now_wall=clock.wall(), timeout_s=T) == (412, expected)
    assert view(dcs).failover is None


def test_a_standby_cluster_refuses_switchover_and_forced_failover_by_saying_why(dcs, clock):
    """Its leader is not a primary: nothing would hand over, and the request would hang until it timed out."""
    seed(dcs, config={"standby_cluster": {"host": "10.0.0.9", "port": 5432}})
    status, message = refusal(ops.request_switchover, dcs, leader="n1", candidate="n2", scheduled_at=None,
                              now_wall=clock.wall(), timeout_s=T)
    assert status == 412 and message.startswith("this is a standby cluster: its leader is not a primary")
    status, message = refusal(ops.request_failover, dcs, candidate="n2", force=True, timeout_s=T)
    assert status == 412 and message.startswith("this is a standby cluster")
    assert view(dcs).failover is None


def test_switchover_to_a_stopped_candidate_or_an_async_one_in_sync_mode(dcs, clock):
    members = [m("n1", "primary", "running"), m("n2", state="stopped"), m("n3")]
    seed(dcs, members=members, config={"synchronous_mode": True}, sync=("n2",))
    status, message = refusal(ops.request_switchover, dcs, leader="n1", candidate="n2", scheduled_at=None,
                              now_wall=clock.wall(), timeout_s=T)
    assert message == "candidate n2 is not eligible: n2 is not running (state stopped)"
    status, message = refusal(ops.request_switchover, dcs, leader="n1", candidate="n3", scheduled_at=None,
                              now_wall=clock.wall(), timeout_s=T)
    assert message == "candidate n3 is not eligible: n3 is not a synchronous standby"


def test_switchover_without_any_eligible_candidate(dcs, clock):
    seed(dcs, members=[m("n1", "primary", "running"), m("n3", tags=Tags(nofailover=True))])
    assert refusal(ops.request_switchover, dcs, leader="n1", candidate=None, scheduled_at=None,
                   now_wall=clock.wall(), timeout_s=T) == (412, "no eligible candidate: n3 has the nofailover tag")


def test_switchover_needs_a_running_leader(dcs, clock):
    seed(dcs, leader=None)
    assert refusal(ops.request_switchover, dcs, leader=None, candidate="n2", scheduled_at=None,
                   now_wall=clock.wall(), timeout_s=T) == (412, "the cluster has no leader: use failover instead")


def test_switchover_is_accepted_in_pause(dcs, clock):
    # pause stops automatic actions, not an operator's explicit request (as in Patroni)
    seed(dcs)
    ops.set_pause(dcs, True, timeout_s=T)
    ops.request_switchover(dcs, leader="n1", candidate="n2", scheduled_at=None, now_wall=clock.wall(), timeout_s=T)
    assert view(dcs).failover.candidate == "n2"


def test_scheduled_switchover(dcs, clock):
    seed(dcs)
    result = ops.request_switchover(dcs, leader="n1", candidate="n2", scheduled_at="2023-11-15T10:00:00+01:00",
                                    now_wall=clock.wall(), timeout_s=T)
    assert result.scheduled_at == 1_700_038_800.0
    assert view(dcs).failover.scheduled_at == 1_700_038_800.0


@pytest.mark.parametrize("text, fragment", [
    ("2023-11-15T10:00:00", "must include a timezone"),
    ("2020-01-01T00:00:00+00:00", "must be in the future"),
    ("next tuesday", "not an ISO-8601"),
])
def test_bad_schedules_are_400(dcs, clock, text, fragment):
    seed(dcs)
    status, message = refusal(ops.request_switchover, dcs, leader="n1", candidate="n2", scheduled_at=text,
                              now_wall=clock.wall(), timeout_s=T)
    assert status == 400 and message.startswith("scheduled_at: ") and fragment in message


def test_a_second_switchover_is_a_conflict_until_the_first_is_cancelled(dcs, clock):
    seed(dcs)
    ops.request_switchover(dcs, leader="n1", candidate="n2", scheduled_at="2024-01-01T00:00:00+00:00",
                           now_wall=clock.wall(), timeout_s=T)
    status, message = refusal(ops.request_switchover, dcs, leader="n1", candidate=None, scheduled_at=None,
                              now_wall=clock.wall(), timeout_s=T)
    assert status == 409 and "already pending" in message and "n2" in message
    cancelled = ops.cancel_switchover(dcs, timeout_s=T)
    assert (cancelled.leader, cancelled.candidate) == ("n1", "n2")
    assert view(dcs).failover is None
    assert refusal(ops.cancel_switchover, dcs, timeout_s=T) == (404, "no switchover or failover is pending")


def test_a_lost_race_for_the_failover_key_is_409(dcs, clock, monkeypatch):
    seed(dcs)
    monkeypatch.setattr(dcs, "set_failover", lambda *a, **k: False)
    status, _ = refusal(ops.request_switchover, dcs, leader="n1", candidate="n2", scheduled_at=None,
                        now_wall=clock.wall(), timeout_s=T)
    assert status == 409


def test_an_unreachable_dcs_is_503(dcs, clock):
    seed(dcs)
    dcs.kv.reachable = False
    status, message = refusal(ops.request_switchover, dcs, leader="n1", candidate="n2", scheduled_at=None,
                              now_wall=clock.wall(), timeout_s=T)
    assert status == 503 and "DCS" in message
    assert refusal(ops.patch_config, dcs, {"ttl": 40}, timeout_s=T)[0] == 503


# ------------------------------------------------------------------------------ failover


def test_failover_without_a_primary_may_pick_a_lagging_candidate(dcs):
    seed(dcs, leader=None)
    assert ops.request_failover(dcs, candidate="n4", force=False, timeout_s=T) == \
        ops.FailoverRequested(None, "n4", None)
    assert view(dcs).failover.candidate == "n4" and view(dcs).failover.leader is None


def test_failover_with_a_healthy_primary_needs_force_and_then_full_eligibility(dcs):
    seed(dcs)
    status, message = refusal(ops.request_failover, dcs, candidate="n2", force=False, timeout_s=T)
    assert status == 412 and "healthy leader n1" in message
    status, message = refusal(ops.request_failover, dcs, candidate="n4", force=True, timeout_s=T)
    assert "n4 lags" in message
    ops.request_failover(dcs, candidate="n2", force=True, timeout_s=T)
    assert view(dcs).failover.candidate == "n2"


def test_failover_never_to_a_nofailover_or_unknown_member(dcs):
    seed(dcs, leader=None)
    assert refusal(ops.request_failover, dcs, candidate="n3", force=True, timeout_s=T) == \
        (412, "candidate n3 is not eligible: n3 has the nofailover tag")
    assert refusal(ops.request_failover, dcs, candidate="zz", force=False, timeout_s=T)[1] == \
        "candidate zz is not a member of the cluster"
    assert refusal(ops.request_failover, dcs, candidate=None, force=False, timeout_s=T)[0] == 400


def test_check_functions_are_pure_over_a_view(dcs):
    seed(dcs, leader=None)
    snapshot = view(dcs)
    assert ops.check_failover(snapshot, "n2", force=False).name == "n2"
    stopped_leader = replace(snapshot, leader=None)
    with pytest.raises(OperationError):
        ops.check_switchover(stopped_leader, None, "n2")


# ------------------------------------------------------------------------------ pause and config


def test_pause_and_resume_through_the_config_key(dcs):
    seed(dcs, config={"ttl": 30, "custom_key": "kept"})
    assert ops.set_pause(dcs, True, timeout_s=T) == ops.PauseChanged(True, True)
    assert view(dcs).paused and view(dcs).config.to_dict()["custom_key"] == "kept"
    assert ops.set_pause(dcs, True, timeout_s=T) == ops.PauseChanged(True, False)
    assert ops.set_pause(dcs, False, timeout_s=T) == ops.PauseChanged(False, True)
    assert not view(dcs).paused


def test_patch_merges_deletes_with_null_and_validates(dcs):
    seed(dcs, config={"ttl": 40, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB",
                                                                                  "max_connections": 100}}})
    result = ops.patch_config(dcs, {"ttl": 50, "postgresql": {"parameters": {"work_mem": None,
                                                                            "shared_buffers": "1GB"}}},
                              timeout_s=T)
    assert result.changed
    stored = view(dcs).config.to_dict()
    assert stored == result.config
    assert stored["ttl"] == 50 and stored["loop_wait"] == 10
    assert stored["postgresql"]["parameters"] == {"max_connections": 100, "shared_buffers": "1GB"}
    assert ops.patch_config(dcs, {"ttl": 50}, timeout_s=T).changed is False


def test_an_invalid_patch_is_400_naming_the_key_paths_and_stores_nothing(dcs):
    seed(dcs)
    before = view(dcs).config_revision
    status, message = refusal(ops.patch_config, dcs, {"ttl": "soon", "postgresql": {"parameters": {"a": [1]}}},
                              timeout_s=T)
    assert status == 400
    assert "ttl: must be an integer" in message and "postgresql.parameters.a:" in message
    status, message = refusal(ops.patch_config, dcs, {"ttl": 5}, timeout_s=T)
    assert "ttl: must be >= loop_wait + 2*retry_timeout" in message
    assert view(dcs).config_revision == before
    assert refusal(ops.patch_config, dcs, ["ttl"], timeout_s=T)[0] == 400


def test_put_replaces_the_whole_document(dcs):
    seed(dcs, config={"ttl": 40, "old": 1})
    result = ops.put_config(dcs, {"ttl": 31, "loop_wait": 5}, timeout_s=T)
    assert "old" not in result.config and result.config["ttl"] == 31
    assert view(dcs).config.ttl_s == 31


def test_patch_retries_a_lost_compare_and_set_and_keeps_the_other_edit(dcs, monkeypatch):
    seed(dcs, config={"ttl": 30})
    real = dcs.set_config
    raced = {"done": False}

    def racing(document, expected_revision, *, timeout_s):
        if not raced["done"]:  # another operator writes between our read and our write
            raced["done"] = True
            real({**view(dcs).config.to_dict(), "loop_wait": 5}, expected_revision, timeout_s=timeout_s)
        return real(document, expected_revision, timeout_s=timeout_s)

    monkeypatch.setattr(dcs, "set_config", racing)
    result = ops.patch_config(dcs, {"ttl": 45}, timeout_s=T)
    assert result.config["ttl"] == 45 and result.config["loop_wait"] == 5


def test_config_changes_need_an_initialized_cluster(dcs):
    assert refusal(ops.patch_config, dcs, {"ttl": 40}, timeout_s=T)[0] == 412


def test_merge_patch_is_rfc7386():
    assert ops.merge_patch({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": None, "e": {"f": None}}, "d": [1]}) == \
        {"a": {"c": 2, "e": {}}, "d": [1]}


def test_failsafe_mode_is_stored_where_the_store_allows_it_and_refused_on_the_embedded_raft(clock):
    """The same memory store, once as an external DCS (etcd, Consul: allowed) and once with the embedded
    Raft's refusal: PATCH and PUT name the key and store nothing; switching it off is always allowed."""
    external = memory_dcs(clock, KeyLayout("/service/", "demo"))
    seed(external)
    assert ops.patch_config(external, {"failsafe_mode": True}, timeout_s=T).changed
    assert view(external).config.failsafe_mode is True
    raft = KvDcs(MemoryKv(clock), KeyLayout("/service/", "demo"), failsafe_refusal=RAFT_FAILSAFE_REFUSAL)
    seed(raft)
    before = view(raft).config_revision
    for change in (lambda d: ops.patch_config(d, {"failsafe_mode": True}, timeout_s=T),
                   lambda d: ops.put_config(d, {"ttl": 30, "failsafe_mode": "on"}, timeout_s=T)):
        status, message = refusal(change, raft)
        assert status == 400 and message.startswith("failsafe_mode: not available with the embedded Raft"), message
    assert view(raft).config_revision == before and view(raft).config.failsafe_mode is False
    assert ops.patch_config(raft, {"failsafe_mode": False}, timeout_s=T).changed
