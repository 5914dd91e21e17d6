"""Health checks: the status code of every path on every kind of node (Patroni's semantics)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from api_fakes import (
    MONO,
    PRIMARY,
    PRIMARY_LSN,
    REPLICA,
    STOPPED,
    WITNESS,
    FakeView,
    build_app,
    cluster_view,
    make_config,
    node_status,
    primary_local,
    replica_local,
    with_client,
)

from raftpg.model import DynamicConfig, Leader, NodeStatus, SyncState

PATHS = ["/primary", "/leader", "/read-write", "/master", "/", "/replica", "/read-only", "/sync",
         "/synchronous", "/async", "/asynchronous", "/health", "/liveness", "/readiness"]

ASYNC_REPLICA = replace(REPLICA, view=cluster_view(sync=SyncState("n1", ("n3",), 9)))
LAGGING = node_status("n2", replica_local(lsn=PRIMARY_LSN - 32 * 1024 * 1024))
NOT_STREAMING = node_status("n2", replica_local(streaming=False))
PRIMARY_WITHOUT_KEY = replace(PRIMARY, view=cluster_view(leader=Leader("n2", 8)))

#                        primary 4 + /  replica read-only sync  sync  async async health live ready
EXPECTED = {
    "primary":          [200, 200, 200, 200, 200, 503, 200, 503, 503, 503, 503, 200, 200, 200],
    "sync_replica":     [503, 503, 503, 503, 503, 200, 200, 200, 200, 503, 503, 200, 200, 200],
    "async_replica":    [503, 503, 503, 503, 503, 200, 200, 503, 503, 200, 200, 200, 200, 200],
    "stopped":          [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200, 503],
    "witness":          [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200, 503],
    "not_streaming":    [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200, 200, 503],
    "primary_no_key":   [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200, 200, 503],
}
NODES = {"primary": PRIMARY, "sync_replica": REPLICA, "async_replica": ASYNC_REPLICA, "stopped": STOPPED,
         "witness": WITNESS, "not_streaming": NOT_STREAMING, "primary_no_key": PRIMARY_WITHOUT_KEY}


def codes(view: FakeView, paths: list[str], method: str = "GET") -> list[int]:
    app, _, _ = build_app(view)

    async def body(client):
        out = []
        for path in paths:
            response = await client.request(method, path)
            out.append(response.status)
        return out

    return with_client(app, body)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_every_health_path_on_every_kind_of_node(kind):
    assert dict(zip(PATHS, codes(FakeView(NODES[kind]), PATHS), strict=True)) == \
        dict(zip(PATHS, EXPECTED[kind], strict=True))


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
@pytest.mark.parametrize("kind", ["primary", "async_replica", "stopped"])
def test_head_and_options_answer_the_same_status_without_a_body(kind, method):
    view = FakeView(NODES[kind])
    app, _, _ = build_app(view)

    async def body(client):
        out = []
        for path in PATHS:
            response = await client.request(method, path)
            out.append((response.status, await response.read()))
        return out

    results = with_client(app, body)
    assert [status for status, _ in results] == EXPECTED[kind]
    assert all(payload == b"" for _, payload in results)


def test_health_body_is_the_status_document():
    app, _, _ = build_app(FakeView(REPLICA))

    async def body(client):
        response = await client.get("/replica")
        return response.status, await response.json()

    status, doc = with_client(app, body)
    assert status == 200
    assert doc["role"] == "replica" and doc["state"] == "running"
    assert doc["xlog"] == {"received_location": PRIMARY_LSN, "replayed_location": PRIMARY_LSN,
                           "replayed_timestamp": None, "paused": False}
    assert doc["sync_standby"] is True
    assert doc["patroni"] == {"version": "0.1.0", "scope": "demo", "name": "n2"}


def test_noloadbalance_tag_takes_a_replica_out_of_every_replica_check():
    """Patroni: noloadbalance makes its replica status 503, which /sync and /async share."""
    view = FakeView(ASYNC_REPLICA, make_config("n2", tags={"noloadbalance": True}))
    assert codes(view, ["/replica", "/read-only", "/async", "/health"]) == [503, 503, 503, 200]
    sync = FakeView(REPLICA, make_config("n2", tags={"noloadbalance": True}))
    assert codes(sync, ["/sync", "/read-only-sync", "/readiness"]) == [503, 503, 200]


def test_lag_threshold_in_bytes_and_units():
    view = FakeView(LAGGING)
    paths = ["/replica", "/replica?lag=16MB", "/replica?lag=64MB", "/replica?lag=1000",
             "/read-only?lag=16MB", "/sync?lag=1GB", "/replica?lag=64mb"]
    assert codes(view, paths) == [200, 503, 200, 503, 503, 200, 200]


def test_lag_is_measured_from_the_best_known_primary_position():
    # the status key lags behind the leader's published position: the larger one is the reference
    leader_ahead = cluster_view(last_lsn=PRIMARY_LSN - 64 * 1024 * 1024)
    view = FakeView(replace(LAGGING, view=leader_ahead))
    assert codes(view, ["/replica?lag=16MB"]) == [503]


def test_a_bad_lag_is_a_400_naming_the_parameter():
    app, _, _ = build_app(FakeView(REPLICA))

    async def body(client):
        response = await client.get("/replica?lag=lots")
        return response.status, await response.json()

    status, doc = with_client(app, body)
    assert status == 400 and doc["error"].startswith("lag:")


def test_tag_filters_as_patroni_spells_them_and_replication_state():
    view = FakeView(ASYNC_REPLICA, make_config("n2", tags={"nofailover": True, "zone": "a", "dc": "Ber"}))
    paths = ["/replica?tag_nofailover=true", "/replica?tag_nofailover=false", "/replica?tag_zone=a",
             "/replica?tag_zone=b", "/replica?tag_missing=x", "/replica?zone=b", "/read-only?tag_zone=b",
             "/async?tag_zone=b", "/replica?tag_nosync=false", "/replica?tag_dc=Ber",
             "/replica?replication_state=streaming", "/replica?replication_state=x"]
    # a false boolean tag counts as unset (Patroni drops it); a parameter without tag_ is ignored
    assert codes(view, paths) == [200, 503, 200, 503, 503, 200, 503, 503, 503, 200, 200, 503]


def test_tag_filters_do_not_apply_to_the_primary_and_leader_checks():
    view = FakeView(PRIMARY, make_config("n1", tags={"zone": "a"}))
    paths = ["/primary?tag_zone=b", "/leader?tag_zone=b", "/read-write?tag_zone=b", "/read-only?tag_zone=b",
             "/read-only?tag_zone=a"]
    assert codes(view, paths) == [200, 200, 200, 503, 200]


def test_leader_is_the_key_holder_even_while_its_postgresql_is_down():
    """Patroni's /leader: the leader lock, not PostgreSQL's role (/primary stays stricter)."""
    view = FakeView(PRIMARY)
    view.fresh = primary_local(running=False, in_recovery=None)
    assert codes(view, ["/leader", "/primary", "/readiness"]) == [200, 503, 200]
    expired = FakeView(replace(PRIMARY, cycle_monotonic=MONO - 25))
    assert codes(expired, ["/leader"]) == [503]


def test_read_only_sync_quorum_and_standby_leader():
    paths = ["/read-only-sync", "/read-only-synchronous", "/quorum", "/read-only-quorum", "/standby-leader"]
    assert codes(FakeView(PRIMARY), paths) == [200, 200, 503, 200, 503]
    assert codes(FakeView(REPLICA), paths) == [200, 200, 503, 503, 503]
    assert codes(FakeView(ASYNC_REPLICA), paths) == [503, 503, 503, 503, 503]


def test_quorum_commit_answers_on_the_voters_as_patroni_does():
    """synchronous_mode: quorum: a voter of the sync key is a quorum standby (/quorum, /read-only-quorum),
    not a synchronous one (/sync 503), nor an asynchronous one; a replica outside the key is async."""
    quorum = DynamicConfig(synchronous_mode=True, quorum_commit=True)
    view = cluster_view(config=quorum, sync=SyncState("n1", ("n2",), 9, quorum=1))
    paths = ["/quorum", "/read-only-quorum", "/sync", "/read-only-sync", "/async", "/replica"]
    assert codes(FakeView(replace(REPLICA, view=view)), paths) == [200, 200, 503, 503, 503, 200]
    assert codes(FakeView(replace(PRIMARY, view=view)), paths) == [503, 200, 503, 200, 503, 503]
    outside = replace(REPLICA, view=replace(view, sync=SyncState("n1", ("n3",), 9, quorum=0)))
    assert codes(FakeView(outside), paths) == [503, 503, 503, 503, 200, 200]
    app, _, _ = build_app(FakeView(replace(REPLICA, view=view)))

    async def documents(client):
        node = await (await client.get("/patroni")).json()
        cluster = await (await client.get("/cluster")).json()
        return node, cluster

    node, cluster = with_client(app, documents)
    assert node["quorum_standby"] is True and node["sync_standby"] is False
    assert {m["name"]: m["role"] for m in cluster["members"]}["n2"] == "quorum_standby"


def test_a_standby_clusters_leader_answers_standby_leader_leader_and_read_only_as_patroni_does():
    """standby_cluster set: the key holder runs in recovery, streaming from the source. It is the standby
    leader (/standby-leader, /leader, /read-only), never /primary, and not a /replica; the other members
    are replicas. Without the setting the same node is an ordinary replica holding the key."""
    from raftpg.model.cluster import StandbyCluster
    config = DynamicConfig(standby_cluster=StandbyCluster("10.0.0.9"))
    view = cluster_view(config=config, leader=Leader("n2", 7), sync=None)
    paths = ["/standby-leader", "/leader", "/read-only", "/primary", "/replica"]
    assert codes(FakeView(replace(REPLICA, view=view)), paths) == [200, 200, 200, 503, 503]
    app, _, _ = build_app(FakeView(replace(REPLICA, view=view)))

    async def documents(client):
        return (await (await client.get("/patroni")).json(), await (await client.get("/cluster")).json())

    node, cluster = with_client(app, documents)
    assert node["role"] == "standby_leader"
    assert {m["name"]: m["role"] for m in cluster["members"]}["n2"] == "standby_leader"
    other = replace(REPLICA, view=replace(view, leader=Leader("n3", 7)))
    assert codes(FakeView(other), paths) == [503, 503, 200, 503, 200]


def test_async_needs_the_cluster_view_as_in_patroni():
    assert codes(FakeView(replace(ASYNC_REPLICA, view=None)), ["/async", "/replica"]) == [503, 200]


def test_readiness_honours_lag_with_maximum_lag_on_failover_as_default():
    behind_2mb = node_status("n2", replica_local(lsn=PRIMARY_LSN - 2 * 1024 * 1024,
                                                 replay_lsn=PRIMARY_LSN - 2 * 1024 * 1024,
                                                 receive_lsn=PRIMARY_LSN))
    view = FakeView(behind_2mb)  # maximum_lag_on_failover: 1 MB (the default)
    paths = ["/readiness", "/readiness?lag=4MB", "/readiness?lag=1MB&mode=write", "/readiness?lag=1MB"]
    assert codes(view, paths) == [503, 200, 200, 503]


def test_liveness_follows_the_last_cycle_time():
    """Patroni's thresholds: loop_wait + ttl on a primary, loop_wait + 2*ttl on a replica (30/10 here)."""
    view = FakeView(PRIMARY)
    view.current = replace(PRIMARY, cycle_monotonic=MONO - 39)
    assert codes(view, ["/liveness"]) == [200]
    view.current = replace(PRIMARY, cycle_monotonic=MONO - 41)
    assert codes(view, ["/liveness"]) == [503]
    view = FakeView(replace(REPLICA, cycle_monotonic=MONO - 69))
    assert codes(view, ["/liveness"]) == [200]
    view.current = replace(REPLICA, cycle_monotonic=MONO - 71)
    assert codes(view, ["/liveness"]) == [503]


def test_liveness_is_200_while_paused_whatever_the_loop_does():
    from raftpg.model import DynamicConfig
    paused = replace(REPLICA, view=cluster_view(config=DynamicConfig.from_dict({"pause": True})),
                     cycle_monotonic=MONO - 500)
    assert codes(FakeView(paused), ["/liveness"]) == [200]


def test_liveness_grants_a_grace_period_before_the_first_cycle():
    view = FakeView(replace(PRIMARY, cycle_monotonic=None))
    app, _, _ = build_app(view)

    async def body(client):
        first = (await client.get("/liveness")).status
        view.mono += 41
        return first, (await client.get("/liveness")).status

    assert with_client(app, body) == (200, 503)


def test_primary_keeps_200_while_its_lease_holds_when_the_dcs_was_unreadable():
    unread = replace(PRIMARY, view=None)
    assert codes(FakeView(unread), ["/primary", "/readiness"]) == [200, 200]
    expired = replace(unread, lease_valid_s=0.0)
    assert codes(FakeView(expired), ["/primary", "/readiness"]) == [503, 503]


def test_a_primary_whose_lease_ran_out_since_its_last_cycle_is_not_the_primary():
    """Regression: an agent frozen (SIGSTOP) past its lease kept a status saying "primary holding the key";
    after SIGCONT its API answered /primary 200 from that stale status, next to the new primary's 200,
    until its loop finished a cycle (seen in tests/integration/test_fencing_cluster.py)."""
    # the last cycle ended 1 s ago with 20 s of lease left: still the primary
    assert codes(FakeView(PRIMARY), ["/primary", "/readiness"]) == [200, 200]
    stale = replace(PRIMARY, cycle_monotonic=MONO - 25)  # frozen for 25 s since: the lease ran out 5 s ago
    assert codes(FakeView(stale), ["/primary", "/read-write", "/readiness", "/health"]) == [503, 503, 503, 200]


def test_a_paused_primary_still_answers_200_and_says_paused():
    from raftpg.model import DynamicConfig
    paused = replace(PRIMARY, view=cluster_view(config=DynamicConfig.from_dict({"pause": True})))
    app, _, _ = build_app(FakeView(paused))

    async def body(client):
        response = await client.get("/primary")
        return response.status, (await response.json())["pause"]

    assert with_client(app, body) == (200, True)


def test_health_status_is_built_from_the_published_status_only():
    """The handlers never call anything that could block: the view is a plain value holder."""
    view = FakeView(replace(PRIMARY, local=primary_local(running=False, in_recovery=None)))
    assert codes(view, ["/primary", "/health"]) == [503, 503]


def test_a_primary_past_its_demotion_point_is_not_the_primary():
    """Item 12 of the safety issue: the loop demotes ``demote_margin_s`` before its lease ends and the
    supervisor fences soon after; /primary must say 503 from that moment, not until the lease's end."""
    about_to_demote = replace(PRIMARY, cycle_monotonic=MONO - 1, lease_valid_s=5.0, demote_margin_s=4.5)
    assert codes(FakeView(about_to_demote), ["/primary", "/readiness"]) == [503, 503]
    well_within = replace(PRIMARY, cycle_monotonic=MONO - 1, lease_valid_s=10.0, demote_margin_s=4.5)
    assert codes(FakeView(well_within), ["/primary", "/readiness"]) == [200, 200]


def test_health_checks_describe_postgresql_as_it_is_now_not_as_the_last_cycle_saw_it():
    """DESIGN.md rule 10: a replica whose postmaster died since the last cycle is out of rotation at once,
    and a replica that started streaming since is in rotation at once."""
    view = FakeView(REPLICA)
    view.fresh = replica_local(running=False, in_recovery=None, streaming=False)
    assert codes(view, ["/replica", "/read-only", "/health", "/readiness"]) == [503, 503, 503, 503]
    view = FakeView(replace(REPLICA, local=replica_local(streaming=False)))
    assert codes(view, ["/replica"]) == [503]
    view.fresh = replica_local()
    assert codes(view, ["/replica", "/read-only", "/health"]) == [200, 200, 200]
    view = FakeView(PRIMARY)
    view.fresh = primary_local(running=False, in_recovery=None)  # fenced since the last cycle
    assert codes(view, ["/primary", "/read-write", "/health"]) == [503, 503, 503]


def test_before_the_first_cycle_ends_the_body_describes_postgresql_as_the_check_found_it():
    """An agent restarted after a kill rewinds and starts PostgreSQL in its first cycle; until that cycle
    ends the loop has no observation. A check that answers 200 (the probe finds a streaming replica) must
    not describe the node as stopped and uninitialized (seen in a full run: /replica 200, /patroni
    "stopped", "uninitialized"); with no server running, the node still reads as stopped."""
    starting = NodeStatus("n2", witness=False)
    view = FakeView(starting)
    view.fresh = replica_local()
    app, _, _ = build_app(view)

    async def body(client):
        out = []
        for path in ("/replica", "/patroni"):
            response = await client.get(path)
            out.append((response.status, await response.json()))
        return out

    (code, doc), (_, patroni) = with_client(app, body)
    assert code == 200
    for shown in (doc, patroni):
        assert (shown["role"], shown["state"], shown["replication_state"]) == ("replica", "running", "streaming")
    view.fresh = replica_local(running=False, in_recovery=None, streaming=False)
    (code, doc), (_, patroni) = with_client(build_app(view)[0], body)
    assert code == 503
    assert (patroni["role"], patroni["state"]) == ("uninitialized", "stopped")
