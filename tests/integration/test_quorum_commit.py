"""Quorum commit end to end (``synchronous_mode: quorum``): real agents, real PostgreSQL 15, the embedded
Raft store, on loopback.

The primary keeps ``synchronous_standby_names = 'ANY n (...)'`` and the sync key's voters and quorum in
step (raftpg.ha.quorum); a failover candidate promotes only after quorum + 1 voters told it they are not
ahead. So killing the primary again and again under writes loses no acknowledged row, on three nodes
(ANY 1 of 2, quorum 1) and on five (ANY 2 of 4, quorum 2); and a standby that stops leaves the quorum
without blocking commits when ``synchronous_node_count`` allows it.

Timing is never asserted; every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
from cluster_fixtures import sql, try_sql, wait_primary, wait_streaming
from test_ha_cluster import Writer
from test_synchronous import cluster_doc, crash_primary, ctl, status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

QUORUM = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "synchronous_mode": "quorum"}


def quorum_standbys(cluster: Any, name: str) -> set[str]:
    body = cluster_doc(cluster, name) or {}
    return {m["name"] for m in body.get("members", []) if m.get("role") == "quorum_standby"}


def wait_quorum(cluster: Any, primary: str, standbys: set[str], num: int, timeout_s: float = 90.0) -> None:
    """PostgreSQL waits for ANY ``num`` of ``standbys``, and the key names them all as voters."""
    expected = f"ANY {num} ({', '.join(chr(34) + s + chr(34) for s in sorted(standbys))})"

    def settled() -> bool:
        rows = try_sql(cluster, primary, "SHOW synchronous_standby_names")
        return bool(rows) and rows[0][0] == expected and quorum_standbys(cluster, primary) == standbys
    cluster.wait_for(settled, timeout_s, f"{primary} to wait for {expected} with those voters in the key")


def start(make_cluster: Any, names: list[str], dcs: dict[str, Any]) -> tuple[Any, str]:
    cluster = make_cluster(names, dcs=dcs)
    cluster.start_all()
    primary = wait_primary(cluster, 120)
    wait_streaming(cluster, primary, set(names) - {primary}, timeout_s=180)
    return cluster, primary


def test_three_nodes_quorum_standbys_everywhere_and_no_row_lost_across_kills(make_cluster):
    cluster, primary = start(make_cluster, ["n1", "n2", "n3"], QUORUM)
    replicas = sorted(set(cluster.nodes) - {primary})
    wait_quorum(cluster, primary, set(replicas), 1)

    states = dict(sql(cluster, primary, "SELECT application_name, sync_state FROM pg_stat_replication"))
    assert states == dict.fromkeys(replicas, "quorum"), states
    assert [cluster.api(n, "/quorum")[0] for n in (primary, *replicas)] == [503, 200, 200]
    assert [cluster.api(n, "/read-only-quorum")[0] for n in (primary, *replicas)] == [200, 200, 200]
    assert [cluster.api(n, "/sync")[0] for n in (primary, *replicas)] == [503, 503, 503]
    assert status(cluster, replicas[0])["quorum_standby"] is True
    rows = {row["Member"]: row["Role"] for row in json.loads(ctl(cluster, replicas[0], "list", "--format", "json"))}
    assert rows == {primary: "Leader", replicas[0]: "Quorum Standby", replicas[1]: "Quorum Standby"}, rows

    kill_rounds(cluster, primary, 3, num=1)


def test_five_nodes_any_two_of_four_lose_nothing_across_kills(make_cluster):
    cluster, primary = start(make_cluster, ["n1", "n2", "n3", "n4", "n5"], {**QUORUM, "synchronous_node_count": 2})
    wait_quorum(cluster, primary, set(cluster.nodes) - {primary}, 2)
    key = (cluster_doc(cluster, primary) or {}).get("members", [])
    assert len([m for m in key if m.get("role") == "quorum_standby"]) == 4
    kill_rounds(cluster, primary, 2, num=2)


def kill_rounds(cluster: Any, primary: str, rounds: int, num: int) -> None:
    sql(cluster, primary, "CREATE TABLE ha_rows(v int PRIMARY KEY)")
    with Writer(cluster) as writer:
        summary = [kill_round(cluster, writer, round_, num) for round_ in range(1, rounds + 1)]
    print("\n" + "\n".join(summary))


def kill_round(cluster: Any, writer: Writer, round_: int, num: int) -> str:
    primary = wait_primary(cluster, 60)
    others = set(cluster.nodes) - {primary}
    wait_streaming(cluster, primary, others, timeout_s=180)
    wait_quorum(cluster, primary, others, num, timeout_s=120)
    before = len(writer.acked)
    cluster.wait_for(lambda: len(writer.acked) >= before + 20, 30, f"round {round_}: writes before the kill")
    new_primary, acked = crash_primary(cluster, writer, primary, round_)
    decision = status(cluster, new_primary)["decision"]
    assert "quorum commit" in decision, decision
    cluster.start(primary)  # the killed node comes back (rewound or re-cloned) as a replica
    wait_streaming(cluster, new_primary, {primary}, timeout_s=180)
    return f"round {round_}: killed {primary}, {new_primary} promoted; {len(acked)} rows acknowledged, 0 lost"


def test_a_stopped_standby_leaves_the_quorum_and_commits_go_on(make_cluster):
    cluster, primary = start(make_cluster, ["n1", "n2", "n3"], QUORUM)
    replicas = sorted(set(cluster.nodes) - {primary})
    wait_quorum(cluster, primary, set(replicas), 1)
    sql(cluster, primary, "CREATE TABLE ha_rows(v int PRIMARY KEY)")
    gone, kept = replicas
    with Writer(cluster) as writer:
        cluster.stop(gone)  # its agent stops its PostgreSQL cleanly; Raft keeps 2 of 3 voters
        before = len(writer.acked)
        cluster.wait_for(lambda: len(writer.acked) >= before + 20, 60, "commits with one standby gone")
        wait_quorum(cluster, primary, {kept}, 1)
        # the key now needs kept's vote alone: it holds every commit acknowledged since
        body = cluster_doc(cluster, primary) or {}
        assert {m["name"]: m["role"] for m in body.get("members", [])}.get(kept) == "quorum_standby"
        cluster.start(gone)
        wait_quorum(cluster, primary, set(replicas), 1, timeout_s=180)
        after = len(writer.acked)
        cluster.wait_for(lambda: len(writer.acked) >= after + 10, 60, "commits after the standby returned")
    present = {r[0] for r in sql(cluster, primary, "SELECT v FROM ha_rows")}
    assert set(writer.acked) <= present


def test_a_lone_voter_waits_for_the_quorum_and_the_one_ahead_wins(make_cluster):
    """The primary and the standby that acknowledged its last commits die together. The other standby,
    held behind (its WAL receiver frozen), is the only data node left: with quorum 1 it must hear a second
    voter before promoting, so it waits rather than promote without the acknowledged rows. When the
    standby that is ahead returns, that one is promoted, and no acknowledged row is lost. Two witnesses
    keep a Raft majority (3 of 5) with two data nodes down."""
    cluster = make_cluster(["n1", "n2", "n3", "w1", "w2"], dcs=QUORUM, witnesses=("w1", "w2"))
    cluster.start_all()
    primary = wait_primary(cluster, 120)
    ahead, behind = sorted({"n1", "n2", "n3"} - {primary})
    wait_streaming(cluster, primary, {ahead, behind}, timeout_s=180)
    wait_quorum(cluster, primary, {ahead, behind}, 1)
    sql(cluster, primary, "CREATE TABLE ha_rows(v int PRIMARY KEY)")
    receiver = sql(cluster, behind, "SELECT pid FROM pg_stat_wal_receiver")[0][0]
    os.kill(receiver, signal.SIGSTOP)
    try:
        with Writer(cluster) as writer:
            cluster.wait_for(lambda: len(writer.acked) >= 50, 60, "rows acknowledged by the standby ahead alone")
            cluster.kill_node(primary)
            cluster.kill_node(ahead)
        acked = set(writer.acked)
    finally:
        os.kill(receiver, signal.SIGCONT)
    # the lone voter sees the key free and stays a replica, saying why, over several cycles
    waited: set[str] = set()

    def refusing() -> bool:
        decision = status(cluster, behind).get("decision") or ""
        if "voters needed" in decision:
            waited.add(str(status(cluster, behind).get("dcs_last_seen")))
        return len(waited) >= 3
    cluster.wait_for(refusing, 90, f"{behind} to refuse promotion for want of votes, cycle after cycle")
    assert cluster.primary() is None
    cluster.start(ahead)
    new_primary = wait_primary(cluster, 120)
    assert new_primary == ahead, f"{new_primary} was promoted, not {ahead}, the standby that was ahead"
    present = {r[0] for r in sql(cluster, new_primary, "SELECT v FROM ha_rows")}
    lost = sorted(acked - present)
    assert not lost, f"{len(lost)} acknowledged rows lost, e.g. {lost[:10]}"
