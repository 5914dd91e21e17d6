"""Write endpoints, auth, body limits, error shapes and the read documents, against a fake node."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from api_fakes import (
    PRIMARY,
    REPLICA,
    WALL,
    WITNESS,
    FakeCommands,
    FakeView,
    build_app,
    cluster_view,
    primary_local,
    with_client,
)

from raftpg.api import ApiSettings
from raftpg.ha.operations import OperationError, Refusal
from raftpg.model import DynamicConfig, Failover

AUTH = ApiSettings(username="admin", password="s3cret")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def call(requests, view=None, commands=None, settings=None):
    """Run ``requests`` (list of (method, path, kwargs)) and return [(status, body or text)]."""
    app, view, commands = build_app(view, commands, settings)

    async def body(client):
        out = []
        for method, path, kwargs in requests:
            response = await client.request(method, path, **kwargs)
            text = await response.text()
            try:
                out.append((response.status, json.loads(text) if text else None))
            except ValueError:
                out.append((response.status, text))
        return out

    return with_client(app, body), commands


# ------------------------------------------------------------------------------ auth


def test_unsafe_methods_need_credentials_when_authentication_is_configured():
    requests = [
        ("POST", "/switchover", {"json": {"leader": "n1"}}),
        ("POST", "/switchover", {"json": {"leader": "n1"}, "headers": basic("admin", "wrong")}),
        ("POST", "/switchover", {"json": {"leader": "n1"}, "headers": {"Authorization": "Basic !!!"}}),
        ("POST", "/switchover", {"json": {"leader": "n1"}, "headers": {"Authorization": "Bearer x"}}),
        ("PATCH", "/config", {"json": {"ttl": 40}, "headers": basic("admin", "")}),
        ("DELETE", "/restart", {}),
    ]
    results, commands = call(requests, settings=AUTH)
    assert [status for status, _ in results] == [401] * 6
    assert results[0][1] == {"error": "authentication required"}
    assert commands.calls == []  # a refused request changes nothing


def test_correct_credentials_pass_and_reads_stay_open():
    app, _, commands = build_app(settings=AUTH)

    async def body(client):
        denied = await client.post("/reload")
        challenge = denied.headers.get("WWW-Authenticate")
        ok = await client.post("/reload", headers=basic("admin", "s3cret"))
        read = await client.get("/cluster")
        return denied.status, challenge, ok.status, read.status

    assert with_client(app, body) == (401, 'Basic realm="raftpg"', 202, 200)
    assert commands.calls == [("reload", ())]


# ------------------------------------------------------------------------------ bodies and errors


def test_bad_json_and_wrong_types_are_400_naming_the_field():
    requests = [
        ("POST", "/switchover", {"data": "{not json"}),
        ("POST", "/switchover", {"data": "[1, 2]"}),
        ("POST", "/switchover", {"json": {"leader": 7}}),
        ("POST", "/switchover", {"json": {"leader": "n1", "scheduled_at": False}}),
        ("POST", "/failover", {"json": {}}),
        ("POST", "/failover", {"json": {"candidate": "n2", "force": "yes"}}),
        ("POST", "/restart", {"json": {"role": "boss"}}),
        ("POST", "/restart", {"json": {"restart_pending": 1}}),
        ("POST", "/restart", {"json": {"postgres_version": "sixteen"}}),
        ("POST", "/restart", {"json": {"schedule": "tomorrow"}}),
        ("POST", "/raft/members", {"json": {"addr": ""}}),
        ("PATCH", "/config", {"data": ""}),
        ("POST", "/switchover", {"data": b"\xff\xfe"}),
        ("POST", "/switchover", {"data": '{"leader": NaN}'}),
    ]
    results, commands = call(requests)
    assert all(status == 400 for status, _ in results), results
    fields = [body["error"].split(":")[0] for _, body in results]
    assert fields == ["body", "body", "leader", "scheduled_at", "candidate", "force", "role", "restart_pending",
                      "postgres_version", "schedule", "addr", "body", "body", "body"]
    assert commands.calls == []


def test_a_chunked_body_without_content_length_is_411():
    app, _, commands = build_app()

    async def chunks():
        yield b'{"leader": "n1"}'

    async def body(client):
        response = await client.post("/switchover", data=chunks())
        return response.status, await response.json()

    assert with_client(app, body) == (411, {"error": "Content-Length: required for a request body"})
    assert commands.calls == []


def test_a_body_over_the_cap_is_413():
    results, commands = call([("PATCH", "/config", {"data": "x" * (65 * 1024)}),
                              ("PUT", "/config", {"json": {"k": "y" * (70 * 1024)}})])
    assert [status for status, _ in results] == [413, 413]
    assert results[0][1]["error"].startswith("body:")
    assert commands.calls == []


def test_unknown_paths_and_methods_are_json_404_and_405():
    results, _ = call([("GET", "/nope", {}), ("POST", "/primary", {}), ("GET", "/switchover", {})])
    assert results == [(404, {"error": "not found"}), (405, {"error": "method not allowed"}),
                       (405, {"error": "method not allowed"})]


def test_operation_errors_pass_their_status_and_message_through():
    commands = FakeCommands()
    commands.fail = OperationError("candidate n3 is not eligible: n3 has the nofailover tag", Refusal.REFUSED)
    results, _ = call([("POST", "/switchover", {"json": {"leader": "n1", "candidate": "n3"}})],
                      commands=commands)
    assert results == [(412, {"error": "candidate n3 is not eligible: n3 has the nofailover tag"})]


def test_an_unexpected_exception_is_logged_and_answered_without_details(caplog):
    commands = FakeCommands()

    async def broken(*args):
        raise RuntimeError("secret detail")

    commands.reload = broken  # type: ignore[method-assign]
    results, _ = call([("POST", "/reload", {})], commands=commands)
    assert results == [(500, {"error": "internal error (logged on the node)"})]
    assert "secret detail" in caplog.text


# ------------------------------------------------------------------------------ operations


def test_operations_reach_the_commands_with_parsed_arguments():
    requests = [
        ("POST", "/switchover", {"json": {"leader": "n1", "candidate": "n2"}}),
        ("POST", "/switchover", {"json": {"leader": "n1", "member": "n2", "scheduled_at": "2030-01-01T00:00+00:00"}}),
        ("DELETE", "/switchover", {}),
        ("POST", "/failover", {"json": {"candidate": "n2", "force": True}}),
        ("PATCH", "/config", {"json": {"ttl": 40, "pause": None}}),
        ("PUT", "/config", {"json": {"ttl": 30}}),
        ("POST", "/reinitialize", {"json": {"force": True}}),
        ("POST", "/reinitialize", {}),
        ("POST", "/raft/members", {"json": {"addr": "127.0.0.1:2230"}}),
        ("DELETE", "/raft/members/127.0.0.1:2230", {}),
        ("POST", "/raft/leader", {}),
    ]
    results, commands = call(requests)
    assert [status for status, _ in results] == [200, 202, 200, 200, 200, 200, 202, 202, 200, 200, 200]
    assert results[4][1] == {"ttl": 40, "loop_wait": 10, "pause": None}  # PATCH answers the stored config
    assert commands.calls == [
        ("switchover", ("n1", "n2", None)),
        ("switchover", ("n1", "n2", "2030-01-01T00:00+00:00")),
        ("cancel_switchover", ()),
        ("failover", ("n2", True)),
        ("patch_config", ({"ttl": 40, "pause": None},)),
        ("put_config", ({"ttl": 30},)),
        ("reinitialize", (True,)),
        ("reinitialize", (False,)),
        ("add_raft_member", ("127.0.0.1:2230",)),
        ("remove_raft_member", ("127.0.0.1:2230",)),
        ("transfer_raft_leadership", (None,)),
    ]


def test_raft_routes_are_404_without_the_embedded_store():
    view = FakeView(PRIMARY, raft=False)
    results, commands = call([("GET", "/raft/members", {}), ("POST", "/raft/members", {"json": {"addr": "a:1"}}),
                              ("DELETE", "/raft/members/a:1", {})], view=view)
    assert [status for status, _ in results] == [404, 404, 404]
    assert commands.calls == []


def test_restart_conditions():
    pending = replace(PRIMARY, local=primary_local(pending_restart=True))
    requests = [
        ("POST", "/restart", {"json": {"restart_pending": True}}),
        ("POST", "/restart", {"json": {"role": "replica"}}),
        ("POST", "/restart", {"json": {"role": "master"}}),
        ("POST", "/restart", {"json": {"postgres_version": "16.1"}}),
        ("POST", "/restart", {"json": {"postgres_version": "16.3"}}),
        ("POST", "/restart", {}),
    ]
    results, commands = call(requests, view=FakeView(PRIMARY))
    assert [status for status, _ in results] == [503, 503, 200, 503, 200, 200]
    assert results[0][1]["error"] == "restart conditions are not satisfied: restart_pending: " \
        "PostgreSQL has no pending restart"
    assert len(commands.calls) == 3
    results, _ = call([("POST", "/restart", {"json": {"restart_pending": True}})], view=FakeView(pending))
    assert results[0][0] == 200
    results, commands = call([("POST", "/restart", {})], view=FakeView(WITNESS))
    assert results[0][0] == 503 and "witness" in results[0][1]["error"] and commands.calls == []


def test_a_scheduled_restart_shows_in_status_and_can_be_cancelled():
    view = FakeView(PRIMARY)
    when = "2023-11-15T00:00:00+00:00"  # after WALL
    requests = [
        ("POST", "/restart", {"json": {"schedule": when, "role": "primary"}}),
        ("POST", "/restart", {"json": {"schedule": when}}),
        ("GET", "/patroni", {}),
        ("DELETE", "/restart", {}),
        ("DELETE", "/restart", {}),
        ("POST", "/restart", {"json": {"schedule": "2020-01-01T00:00:00+00:00"}}),
    ]
    results, commands = call(requests, view=view)
    assert [status for status, _ in results] == [202, 409, 200, 200, 404, 400]
    assert results[2][1]["scheduled_restart"]["schedule"] == when
    assert results[2][1]["scheduled_restart"]["role"] == "primary"
    assert "future" in results[5][1]["error"] and results[5][1]["error"].startswith("schedule:")
    assert commands.calls == []


def test_a_scheduled_restart_fires_on_time():
    view = FakeView(PRIMARY)
    app, _, commands = build_app(view)

    async def body(client):
        import asyncio
        view.wall_s = WALL
        response = await client.post("/restart", json={"schedule": "2023-11-14T22:13:20.05+00:00"})
        await asyncio.sleep(0.3)
        return response.status

    assert with_client(app, body) == 202
    assert commands.calls == [("restart", ())]


# ------------------------------------------------------------------------------ read documents


def test_status_document_on_the_primary():
    results, _ = call([("GET", "/patroni", {})])
    doc = results[0][1]
    assert doc["role"] == "primary" and doc["state"] == "running" and doc["timeline"] == 2
    assert doc["xlog"] == {"location": 0x3000000}
    assert doc["replication"][0]["application_name"] == "n2"
    assert doc["database_system_identifier"] == "7301234567890123456"
    assert doc["dcs_last_seen"] == int(WALL - 1)
    assert doc["raft"]["term"] == 4 and doc["raft"]["commit_index"] == 41
    assert doc["server_version"] == 160002 and doc["pause"] is False and doc["pending_restart"] is False


def test_cluster_document_like_patronictl_list():
    view = FakeView(replace(PRIMARY, view=cluster_view(
        failover=Failover("n1", "n2", WALL + 3600, 20), config=DynamicConfig.from_dict({"pause": True}))))
    results, _ = call([("GET", "/cluster", {})], view=view)
    doc = results[0][1]
    assert doc["pause"] is True and doc["leader"] == "n1"
    assert doc["scheduled_switchover"] == {"at": "2023-11-14T23:13:20+00:00", "from": "n1", "to": "n2"}
    rows = {m["name"]: m for m in doc["members"]}
    assert [m["name"] for m in doc["members"]] == ["n1", "n2", "n3", "w4"]
    assert (rows["n1"]["role"], rows["n2"]["role"], rows["n3"]["role"], rows["w4"]["role"]) == \
        ("leader", "sync_standby", "replica", "witness")
    # Patroni's cluster_as_json: positions as text, lags in bytes, none for the leader
    assert rows["n3"]["lag"] == 100 and rows["n2"]["lag"] == 0 and "lag" not in rows["n1"]
    assert rows["n2"]["lsn"] == "0/3000000" and rows["n3"]["lsn"] == "0/2FFFF9C"
    assert rows["n2"]["receive_lsn"] == "unknown" and rows["n2"]["replay_lag"] == "unknown"
    assert rows["n2"]["host"] == "127.0.0.1" and rows["n2"]["port"] == 5434
    assert (rows["n1"]["raft"], rows["n2"]["raft"], rows["w4"]["raft"]) == ("leader", "follower", "witness")


def test_cluster_answers_from_the_dcs_as_it_is_now_and_from_the_last_cycle_when_the_store_is_silent():
    """A replica that began streaming after this node's last cycle: Patroni's /cluster reads the DCS
    afresh, so patronictl list shows it at once; raftpg's showed the last cycle's view, up to loop_wait
    (10 s by default) behind."""
    last_cycle = cluster_view()
    members = tuple(replace(m, state="creating replica") if m.name == "n3" else m for m in last_cycle.members)
    view = FakeView(replace(PRIMARY, view=replace(last_cycle, members=members)))
    results, _ = call([("GET", "/cluster", {})], view=view)  # the store did not answer
    assert {m["name"]: m["state"] for m in results[0][1]["members"]}["n3"] == "creating replica"
    view.dcs_now = last_cycle
    results, _ = call([("GET", "/cluster", {})], view=view)
    assert {m["name"]: m["state"] for m in results[0][1]["members"]}["n3"] == "streaming"


def test_cluster_history_config_are_503_before_the_first_dcs_read():
    view = FakeView(replace(REPLICA, view=None))
    results, _ = call([("GET", "/cluster", {}), ("GET", "/history", {}), ("GET", "/config", {})], view=view)
    assert [status for status, _ in results] == [503, 503, 503]
    no_config = FakeView(replace(REPLICA, view=cluster_view(config_revision=None)))
    results, _ = call([("GET", "/config", {})], view=no_config)
    assert results[0][0] == 503


def test_config_and_history_documents():
    view = FakeView(replace(PRIMARY, view=cluster_view(config=DynamicConfig.from_dict({"ttl": 20, "x": 1}))))
    results, _ = call([("GET", "/config", {}), ("GET", "/history", {})], view=view)
    assert results[0] == (200, {"ttl": 20, "x": 1})
    assert results[1] == (200, [[1, 0x2000000, "no recovery target specified", "2023-11-14T22:12:20+00:00", "n1"]])


def test_metrics_in_prometheus_text_format():
    app, _, _ = build_app()

    async def body(client):
        response = await client.get("/metrics")
        return response.status, response.headers["Content-Type"], await response.text()

    status, content_type, text = with_client(app, body)
    assert status == 200 and content_type.startswith("text/plain")
    for line in ['raftpg_role{name="n1",role="primary",scope="demo"} 1.0',
                 'raftpg_primary{name="n1",scope="demo"} 1.0',
                 'raftpg_postgres_timeline{name="n1",scope="demo"} 2.0',
                 'raftpg_leader_changes_total{name="n1",scope="demo"} 1.0',
                 'raftpg_raft_term{name="n1",scope="demo"} 4.0',
                 'raftpg_raft_commit_index{name="n1",scope="demo"} 41.0',
                 'raftpg_paused{name="n1",scope="demo"} 0.0',
                 'raftpg_ha_loop_duration_seconds{name="n1",scope="demo"} 0.01']:
        assert line in text, line


def test_delete_cluster_needs_this_nodes_scope_and_the_confirmed_leader():
    requests = [
        ("DELETE", "/cluster", {}),
        ("DELETE", "/cluster", {"json": {"leader": "n1"}}),
        ("DELETE", "/cluster", {"json": {"scope": "other", "leader": "n1"}}),
        ("DELETE", "/cluster", {"json": {"scope": "demo"}}),
        ("DELETE", "/cluster", {"json": {"scope": "demo", "leader": 1}}),
        ("DELETE", "/cluster", {"json": {"scope": "demo", "leader": None}}),
        ("DELETE", "/cluster", {"json": {"scope": "demo", "leader": "n1"}}),
    ]
    results, commands = call(requests)
    assert [status for status, _ in results] == [400, 400, 400, 400, 400, 200, 200]
    assert [body["error"].split(":")[0] for _, body in results[:5]] == ["body", "scope", "scope", "leader", "leader"]
    assert "not 'other'" in results[2][1]["error"]
    assert commands.calls == [("remove_cluster", (None,)), ("remove_cluster", ("n1",))]


# ------------------------------------------------------------------------------ failsafe_mode


def test_post_failsafe_answers_with_patronis_codes_and_this_nodes_position():
    """A primary cut off from the DCS asks (raftpg.ha.failsafe): 200 ``Accepted`` with the lsn header from
    a replica, 500 from a running primary, 502 with failsafe_mode off; the name is required and checked."""
    commands = FakeCommands()
    app, _, _ = build_app(FakeView(REPLICA), commands, AUTH)
    auth = basic("admin", "s3cret")

    async def body(client):
        out = []
        for answer, payload, headers in [(None, {"name": "n1"}, auth), ("Running as a leader", {"name": "n1"}, auth),
                                         ("failsafe_mode is not enabled", {"name": "n1"}, auth),
                                         (None, {"conn_url": "x"}, auth), (None, {"name": "a/b"}, auth),
                                         (None, {"name": "n1"}, {})]:
            commands.failsafe_answer = answer
            response = await client.post("/failsafe", json=payload, headers=headers)
            out.append((response.status, await response.text(), response.headers.get("lsn")))
        return out

    results = with_client(app, body)
    lsn = str(REPLICA.local.receive_lsn)  # type: ignore[union-attr]
    assert results[0] == (200, "Accepted", lsn)
    assert results[1][0] == 500 and json.loads(results[1][1]) == {"error": "Running as a leader"}
    assert results[2][0] == 502 and json.loads(results[2][1]) == {"error": "failsafe_mode is not enabled"}
    assert results[3][0] == 400 and json.loads(results[3][1])["error"].startswith("name: ")
    assert results[4][0] == 400 and json.loads(results[4][1])["error"].startswith("name: ")
    assert results[5][0] == 401, "an unauthenticated request could hold every replica back from a failover"
    assert [c for c in commands.calls if c[0] == "failsafe"] == [("failsafe", ("n1", False))] * 3


def test_get_failsafe_shows_the_published_topology_or_502():
    topology = (("n1", "http://n1:8008/patroni"), ("n2", "http://n2:8008/patroni"))
    on = replace(REPLICA, view=cluster_view(config=DynamicConfig.from_dict({"failsafe_mode": True}),
                                            failsafe=topology))
    results, _ = call([("GET", "/failsafe", {})], view=FakeView(on))
    assert results == [(200, dict(topology))]
    results, _ = call([("GET", "/failsafe", {})], view=FakeView(REPLICA))
    assert results[0][0] == 502
