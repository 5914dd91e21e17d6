"""Patroni 4.1's REST details: /patroni's postmaster_start_time and pending_restart_reason, /metrics' series
names and labels, restart's ``timeout`` and reinitialize's ``from_leader``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from api_fakes import (
    PRIMARY,
    REPLICA,
    WITNESS,
    FakeView,
    build_app,
    cluster_view,
    member,
    with_client,
)

from raftpg.api.details import DETAILS, DetailsSource
from raftpg.api.patroni_metrics import NAMES, version_number
from raftpg.clock import SystemClock
from raftpg.model import Tags

STARTED = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
PENDING = {"shared_buffers": {"old_value": "16384", "new_value": "256MB"}}

# Patroni 4.1.5's series, as its api.py's do_GET_metrics writes them (the side-by-side test checks the
# live list against a real Patroni)
PATRONI_4_SERIES = {
    "patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time", "patroni_primary",
    "patroni_xlog_location", "patroni_standby_leader", "patroni_replica", "patroni_sync_standby",
    "patroni_quorum_standby", "patroni_xlog_received_location", "patroni_xlog_replayed_location",
    "patroni_xlog_replayed_timestamp", "patroni_xlog_paused", "patroni_postgres_streaming",
    "patroni_postgres_in_archive_recovery", "patroni_postgres_server_version", "patroni_cluster_unlocked",
    "patroni_failsafe_mode_is_active", "patroni_postgres_timeline", "patroni_dcs_last_seen",
    "patroni_pending_restart", "patroni_is_paused", "patroni_postgres_state",
}


class CountingQuery:
    def __init__(self, row=(STARTED, None, None, PENDING), delay_s: float = 0.0) -> None:
        self.row, self.delay_s, self.calls = row, delay_s, 0

    def __call__(self, sql: str):
        import time
        self.calls += 1
        time.sleep(self.delay_s)
        return [self.row]


def app_with_details(view: FakeView, query: CountingQuery):
    app, _, commands = build_app(view)
    app[DETAILS] = DetailsSource(query, SystemClock())
    return app, commands


def get_json(app, path: str):
    async def body(client):
        response = await client.get(path)
        return response.status, await response.json()

    return with_client(app, body)


def scrape(view: FakeView, query: CountingQuery | None = None) -> dict[str, tuple[dict, float]]:
    app, _ = app_with_details(view, query or CountingQuery())

    async def body(client):
        return await (await client.get("/metrics")).text()

    return parse(with_client(app, body))


def parse(text: str) -> dict[str, tuple[dict, float]]:
    """name -> (labels, value) per sample line, names exactly as written (prometheus_client's parser would
    add ``_total`` to counters, which Patroni's names do not have)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, rest = head.partition("{")
        labels = dict(pair.split("=", 1) for pair in rest.rstrip("}").split(",") if pair)
        out[name] = ({k: v.strip('"') for k, v in labels.items()}, float(value))
    return out


def test_patroni_status_has_postmaster_start_time_and_pending_restart_reason():
    status, doc = get_json(app_with_details(FakeView(PRIMARY), CountingQuery())[0], "/patroni")
    assert status == 200
    assert doc["postmaster_start_time"] == "2024-05-01 10:00:00.123456+00:00"  # Patroni's str() of it
    assert doc["pending_restart"] is True and doc["pending_restart_reason"] == PENDING
    assert isinstance(doc["dcs_last_seen"], int)


def test_replica_status_has_replay_timestamp_and_paused():
    query = CountingQuery(row=(STARTED, STARTED, True, None))
    status, doc = get_json(app_with_details(FakeView(REPLICA), query)[0], "/patroni")
    assert doc["xlog"]["replayed_timestamp"] == "2024-05-01 10:00:00.123456+00:00"
    assert doc["xlog"]["paused"] is True and "pending_restart_reason" not in doc


def test_a_failing_details_query_leaves_the_status_without_them():
    def broken(sql):
        raise RuntimeError("connection refused")

    app, _, _ = build_app(FakeView(PRIMARY))
    app[DETAILS] = DetailsSource(broken, SystemClock())
    status, doc = get_json(app, "/patroni")
    assert status == 200 and "postmaster_start_time" not in doc and doc["pending_restart"] is False


def test_health_checks_never_wait_for_the_details_query():
    """A slow details query must not add to a health check's latency: the check takes the cached value."""
    query = CountingQuery(delay_s=2.0)
    app, _ = app_with_details(FakeView(PRIMARY), query)

    async def body(client):
        response = await asyncio.wait_for(client.get("/primary"), 1.0)
        return response.status, await response.json()

    status, doc = with_client(app, body)
    assert status == 200 and "postmaster_start_time" not in doc


def test_metrics_serve_every_patroni_4_series_with_scope_and_name_labels():
    samples = scrape(FakeView(PRIMARY))
    assert PATRONI_4_SERIES <= set(samples) and set(NAMES) == PATRONI_4_SERIES
    for name in PATRONI_4_SERIES:
        assert samples[name][0] == {"scope": "demo", "name": "n1"}, name
    assert samples["patroni_primary"][1] == 1 and samples["patroni_replica"][1] == 0
    assert samples["patroni_xlog_location"][1] == 0x3000000
    assert samples["patroni_postgres_state"][1] == 5 and samples["patroni_postgres_timeline"][1] == 2
    assert samples["patroni_postmaster_start_time"][1] == STARTED.timestamp()
    assert samples["patroni_pending_restart"][1] == 1 and samples["patroni_cluster_unlocked"][1] == 0
    assert samples["patroni_postgres_server_version"][1] == 160002
    assert samples["raftpg_leader_lease_remaining_seconds"][1] == 19.0  # 20 s lease, cycle 1 s ago
    assert samples["raftpg_raft_term"][1] == 4 and samples["raftpg_raft_commit_index"][1] == 41


def test_a_quorum_standby_is_counted_as_one():
    from dataclasses import replace

    from api_fakes import cluster_view

    from raftpg.model import DynamicConfig, SyncState
    view = cluster_view(config=DynamicConfig(synchronous_mode=True, quorum_commit=True),
                        sync=SyncState("n1", ("n2",), 9, quorum=1))
    samples = scrape(FakeView(replace(REPLICA, view=view)))
    assert samples["patroni_quorum_standby"][1] == 1 and samples["patroni_sync_standby"][1] == 0
    assert scrape(FakeView(REPLICA))["patroni_quorum_standby"][1] == 0


def test_replica_metrics_and_the_fresh_state():
    samples = scrape(FakeView(REPLICA))
    assert samples["patroni_replica"][1] == 1 and samples["patroni_primary"][1] == 0
    assert samples["patroni_sync_standby"][1] == 1 and samples["patroni_postgres_streaming"][1] == 1
    assert samples["patroni_xlog_received_location"][1] == 0x3000000
    assert samples["raftpg_leader_lease_remaining_seconds"][1] == 0
    from api_fakes import replica_local
    view = FakeView(REPLICA)
    view.fresh = replica_local(running=False, in_recovery=None, streaming=False)  # died since the cycle
    samples = scrape(view)
    assert samples["patroni_postgres_running"][1] == 0 and samples["patroni_replica"][1] == 0
    assert samples["patroni_postgres_state"][1] == 12


def test_witness_serves_only_raftpg_series():
    samples = scrape(FakeView(WITNESS))
    assert not any(name.startswith("patroni_") for name in samples)
    assert "raftpg_raft_term" in samples


def test_version_encoding_is_patronis():
    assert version_number("4.1.5") == "040105" and version_number("0.1.0") == "000100"


def test_restart_timeout_is_passed_on_and_checked():
    app, commands = app_with_details(FakeView(REPLICA), CountingQuery())

    async def body(client):
        out = []
        for payload in ({"timeout": 30}, {"timeout": "2min"}, {"timeout": 0}, {"timeout": "soon"}):
            response = await client.post("/restart", json=payload)
            out.append((response.status, await response.json()))
        return out

    answers = with_client(app, body)
    assert [a[0] for a in answers] == [200, 200, 400, 400]
    assert answers[2][1]["error"].startswith("timeout: must be a positive number of seconds")
    assert commands.calls == [("restart", (30.0,)), ("restart", (120.0,))]


def test_reinitialize_from_leader_is_passed_on():
    app, commands = app_with_details(FakeView(REPLICA), CountingQuery())

    async def body(client):
        await client.post("/reinitialize", json={"from_leader": True})
        await client.post("/reinitialize", json={"force": True})

    with_client(app, body)
    assert commands.calls == [("reinitialize", (False, True)), ("reinitialize", (True,))]


def test_node_commands_pass_from_leader_on_as_its_own_request():
    from raftpg.api.commands import NodeCommands
    from raftpg.ha.inputs import REINITIALIZE_FROM_LEADER

    class Loop:
        def __init__(self, status):
            self.status, self.requests = status, []

        def request(self, what):
            self.requests.append(what)

        def wake(self):
            pass

    tagged = cluster_view(members=(member("n1", "primary", "running"), member("n2"),
                                   member("n3", tags=Tags(clonefrom=True))))
    loop = Loop(replace(REPLICA, view=tagged))
    commands = NodeCommands(dcs=None, loop=loop, clock=SystemClock())
    # Patroni's from_leader: the leader even while a clonefrom member runs (without it, that member)
    assert asyncio.run(commands.reinitialize(False, True)).message == "reinitialize from n1 requested"
    assert asyncio.run(commands.reinitialize(False, False)).message == "reinitialize from n3 requested"
    assert loop.requests == [REINITIALIZE_FROM_LEADER, "reinitialize"]


def test_restart_pending_counts_what_postgresql_reports_now():
    """The loop's status may not have seen the pending restart that GET /patroni already shows (the
    details query): POST /restart {restart_pending} must not refuse it then."""
    app, commands = app_with_details(FakeView(REPLICA), CountingQuery())  # PENDING: shared_buffers

    async def body(client):
        return (await client.post("/restart", json={"restart_pending": True})).status

    assert with_client(app, body) == 200 and commands.calls == [("restart", ())]
    app, commands = app_with_details(FakeView(REPLICA), CountingQuery(row=(STARTED, None, None, None)))
    assert with_client(app, body) == 503 and commands.calls == []
