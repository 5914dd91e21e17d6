"""The REST API and raftpgctl against a real three-node cluster, and HAProxy in front of it.

raftpgctl runs as a real subprocess (the console script) with the node's config file, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg
import pytest
from cluster_fixtures import sql, try_sql, wait_primary, wait_streaming
from test_ha_cluster import Writer, _setup_table

from raftpg.cli.local_cluster import free_ports
from raftpg.model.lsn import parse_lsn
from raftpg.model.slots import slot_name_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FAST = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4}


def ctl(cluster, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "raftpgctl")
    argv = [exe] if os.path.exists(exe) else [sys.executable, "-m", "raftpg.cli.ctl"]
    result = subprocess.run([*argv, "-c", cluster.config_path(name), *args], capture_output=True, text=True,
                            timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"raftpgctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


@pytest.fixture
def cluster3(make_cluster):
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST)
    cluster.start_all()
    primary = wait_primary(cluster, 90)
    wait_streaming(cluster, primary, set(cluster.nodes) - {primary})
    return cluster


def test_health_paths_on_primary_and_replicas(cluster3):
    primary = cluster3.primary()
    # the API answers from each agent's last cycle: wait until every replica has seen itself streaming
    cluster3.wait_for(lambda: all(cluster3.api(n, "/replica")[0] == 200 for n in cluster3.nodes if n != primary),
                      15, "/replica 200 on both replicas")
    for name in cluster3.nodes:
        expect_primary = 200 if name == primary else 503
        expect_replica = 503 if name == primary else 200
        assert cluster3.api(name, "/primary")[0] == expect_primary
        assert cluster3.api(name, "/leader")[0] == expect_primary
        assert cluster3.api(name, "/read-write")[0] == expect_primary
        assert cluster3.api(name, "/replica")[0] == expect_replica
        assert cluster3.api(name, "/read-only")[0] == 200
        assert cluster3.api(name, "/health")[0] == 200
        assert cluster3.api(name, "/liveness")[0] == 200
        assert cluster3.api(name, "/async")[0] == expect_replica
        assert cluster3.api(name, "/sync")[0] == 503  # asynchronous replication
    status, body = cluster3.api(primary, "/patroni")
    assert status == 200 and body["role"] == "primary" and body["raft"]["leader"]
    listing = ctl(cluster3, primary, "--format", "json", "list")
    members = {m["Member"] if "Member" in m else m["name"]: m for m in json.loads(listing.stdout)}
    assert set(members) == set(cluster3.nodes)


def test_switchover_under_writes_loses_nothing(cluster3):
    old = cluster3.primary()
    _setup_table(cluster3, old)
    candidate = sorted(set(cluster3.nodes) - {old})[0]
    with Writer(cluster3) as writer:
        cluster3.wait_for(lambda: len(writer.acked) >= 20, 30, "writes before the switchover")
        ctl(cluster3, old, "switchover", "--leader", old, "--candidate", candidate, "--force")
        new = wait_primary(cluster3, 60, exclude=old)
        assert new == candidate
        before = len(writer.acked)
        cluster3.wait_for(lambda: len(writer.acked) > before + 10, 30, "writes after the switchover")
    present = {r[0] for r in sql(cluster3, new, "SELECT v FROM ha_rows")}
    assert [v for v in writer.acked if v not in present] == []
    wait_streaming(cluster3, new, {old})  # the old primary is back as a replica
    assert sql(cluster3, old, "SELECT pg_is_in_recovery()")[0][0] is True


def test_pause_stops_failover_and_resume_allows_it(cluster3):
    primary = cluster3.primary()
    ctl(cluster3, primary, "pause")
    cluster3.wait_for(lambda: all(cluster3.api(n, "/patroni")[1].get("pause") for n in cluster3.nodes
                                  if n != primary), 30, "every node to see pause")
    survivor = sorted(set(cluster3.nodes) - {primary})[0]
    cluster3.kill_node(primary)
    # the leader key expires after the TTL; paused agents must not promote: watch for three TTLs
    deadline_checks = 0
    for _ in range(150):
        assert cluster3.primary() is None, "a node was promoted while the cluster was paused"
        if try_sql(cluster3, survivor, "SELECT pg_is_in_recovery()") == [(True,)]:
            deadline_checks += 1
        time.sleep(0.2)  # observing a window in which nothing may happen, not synchronising
    assert deadline_checks > 0
    ctl(cluster3, survivor, "resume")
    assert wait_primary(cluster3, 60, exclude=primary) != primary


def test_a_paused_agent_upgrade_keeps_postgres_serving_and_never_makes_a_second_primary(cluster3):
    """Patroni's agent upgrade (issue 14): pause, stop the primary's agent as systemd or a terminal does
    (SIGTERM to its process group): the same postmaster keeps taking writes. Resumed while that agent is
    away and past the TTL, nobody promotes (the server runs unfenced: ``detached_primary``). The agent
    started again adopts the same postmaster (no restart), fences it and the cluster carries on."""
    primary = cluster3.primary()
    others = set(cluster3.nodes) - {primary}
    sql(cluster3, primary, "CREATE TABLE upgrade_rows(v int)")
    ctl(cluster3, primary, "pause")
    cluster3.wait_for(lambda: all((cluster3.api(n, "/patroni")[1] or {}).get("pause") for n in cluster3.nodes),
                      30, "every node to see pause")
    postmaster = cluster3.postmaster_pid(primary)
    cluster3.signal_group(primary, signal.SIGTERM)
    cluster3.procs[primary].wait(60)
    assert cluster3.postmaster_pid(primary) == postmaster, "a paused stop must leave PostgreSQL running"
    sql(cluster3, primary, "INSERT INTO upgrade_rows VALUES (1)")
    ctl(cluster3, sorted(others)[0], "resume")

    def refusing(name: str) -> bool:
        body = cluster3.api(name, "/patroni")[1] or {}
        return not body.get("pause") and "detached_primary" in str(body.get("decision", ""))

    cluster3.wait_for(lambda: all(refusing(n) for n in others), 60,
                      "the replicas, resumed, refusing to promote past the detached primary")
    assert all(try_sql(cluster3, n, "SELECT pg_is_in_recovery()") == [(True,)] for n in others)
    sql(cluster3, primary, "INSERT INTO upgrade_rows VALUES (2)")  # still the only primary

    cluster3.start(primary)
    cluster3.wait_for(lambda: cluster3.primary() == primary
                      and "detached_primary" not in (cluster3.api(primary, "/config")[1] or {"detached_primary": 1}),
                      60, "the restarted agent adopting its server and clearing detached_primary")
    assert cluster3.postmaster_pid(primary) == postmaster, "adopted, not restarted"
    sql(cluster3, primary, "INSERT INTO upgrade_rows VALUES (3)")
    assert sql(cluster3, primary, "SELECT v FROM upgrade_rows ORDER BY v") == [(1,), (2,), (3,)]
    wait_streaming(cluster3, primary, others)


def test_edit_config_reloadable_and_restart_parameters(cluster3):
    primary = cluster3.primary()
    ctl(cluster3, primary, "edit-config", "-p", "work_mem=7MB", "--force")
    cluster3.wait_for(lambda: all(try_sql(cluster3, n, "SHOW work_mem") == [("7MB",)] for n in cluster3.nodes),
                      60, "work_mem applied on every node")
    ctl(cluster3, primary, "edit-config", "-p", "max_connections=60", "--force")
    cluster3.wait_for(lambda: all(cluster3.api(n, "/patroni")[1].get("pending_restart") for n in cluster3.nodes),
                      60, "max_connections pending restart on every node")
    ctl(cluster3, primary, "restart", "--force", "--pending")
    cluster3.wait_for(lambda: all(try_sql(cluster3, n, "SHOW max_connections") == [("60",)]
                                  for n in cluster3.nodes), 120, "max_connections restarted on every node")


def test_reinit_of_a_replica_reclones_it(cluster3):
    primary = cluster3.primary()
    replica = sorted(set(cluster3.nodes) - {primary})[0]
    sql(cluster3, primary, "CREATE TABLE reinit_marker(x int); INSERT INTO reinit_marker VALUES (1)")
    ctl(cluster3, primary, "reinit", replica, "--force")
    base = cluster3.node_dir(replica)
    cluster3.wait_for(lambda: any(e.startswith("data.") and e.endswith(".failed") for e in os.listdir(base)),
                      120, "the old data directory kept aside")
    wait_streaming(cluster3, primary, {replica}, 120)
    cluster3.wait_for(lambda: try_sql(cluster3, replica, "SELECT x FROM reinit_marker") == [(1,)], 60,
                      "the re-cloned replica to have the data")


@pytest.mark.skipif(not shutil.which("haproxy"), reason="Debian haproxy is not installed")
def test_haproxy_routes_writes_through_switchover_and_kill(cluster3):
    port = free_ports(1)[0]
    servers = "\n".join(
        f"    server {n} 127.0.0.1:{spec.pg_port} check port {spec.api_port} inter 500ms fall 2 rise 1 "
        "on-marked-down shutdown-sessions" for n, spec in cluster3.nodes.items())
    config = f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
listen primary
    bind 127.0.0.1:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms
{servers}
"""
    workdir = tempfile.mkdtemp(prefix="raftpg-haproxy-")
    path = os.path.join(workdir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(config)
    proc = subprocess.Popen(["haproxy", "-f", path, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dsn = cluster3.conninfo(port)
    acked: list[int] = []

    def write(value: int) -> bool:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO via_haproxy VALUES (%s)", (value,))
            acked.append(value)
            return True
        except psycopg.Error:
            return False

    try:
        primary = cluster3.primary()
        sql(cluster3, primary, "CREATE TABLE via_haproxy(v int)")
        counter = iter(range(1_000_000))
        cluster3.wait_for(lambda: write(next(counter)), 30, "a write through HAProxy")
        candidate = sorted(set(cluster3.nodes) - {primary})[0]
        ctl(cluster3, primary, "switchover", "--leader", primary, "--candidate", candidate, "--force")
        cluster3.wait_for(lambda: write(next(counter)) and cluster3.primary() == candidate, 60,
                          "a write through HAProxy after the switchover")
        # the replicas must follow the new primary's timeline first: a primary that dies before any replica
        # holds its timeline leaves nobody eligible (safety rule: no member behind the cluster's timeline is
        # promoted, so the new term is never rolled back) until it comes back
        wait_streaming(cluster3, candidate, set(cluster3.nodes) - {candidate}, 90)
        cluster3.kill_node(candidate)
        new = wait_primary(cluster3, 60, exclude=candidate)
        cluster3.wait_for(lambda: write(next(counter)), 60, "a write through HAProxy after the kill")
        rows = {r[0] for r in sql(cluster3, new, "SELECT v FROM via_haproxy")}
        assert acked[-1] in rows
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_permanent_slots_follow_the_primary_through_a_switchover(cluster3):
    """``slots`` in the dynamic config (edit-config, as a Patroni user writes it): the primary keeps them,
    and after a switchover the new primary does; a name that is not a slot name is refused, naming it."""
    old = cluster3.primary()
    bad = ctl(cluster3, old, "edit-config", "-s", "slots.Keep-WAL.type=physical", "--force", check=False)
    assert bad.returncode != 0 and "slots.Keep-WAL" in bad.stdout + bad.stderr
    ctl(cluster3, old, "edit-config", "-s", "slots.keep_wal.type=physical", "--force")

    def has_slot(name: str) -> bool:
        rows = try_sql(cluster3, name, "SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'keep_wal'")
        return rows == [("physical",)]

    cluster3.wait_for(lambda: has_slot(old), 30, "the permanent slot on the primary")
    candidate = sorted(set(cluster3.nodes) - {old})[0]
    ctl(cluster3, old, "switchover", "--leader", old, "--candidate", candidate, "--force")
    assert wait_primary(cluster3, 60, exclude=old) == candidate
    cluster3.wait_for(lambda: has_slot(candidate), 30, "the permanent slot on the new primary")


def test_replicas_keep_advancing_copies_of_the_primarys_slots_through_a_switchover(cluster3):
    """Slots on replicas (Patroni 4's rule): each replica keeps a copy of every member slot the primary
    publishes, the old primary's included, so the new primary has its slot before the switchover; and the
    former primary keeps copies too, and every slot on it moves past the switchover (none holds its WAL)."""
    old = cluster3.primary()
    names = sorted(cluster3.nodes)

    def slots(name: str) -> dict[str, int]:
        rows = try_sql(cluster3, name, "SELECT slot_name, restart_lsn::text FROM pg_replication_slots "
                                       "WHERE slot_type = 'physical' AND restart_lsn IS NOT NULL") or []
        return {str(slot): parse_lsn(str(at)) for slot, at in rows}

    def has_copies(name: str) -> bool:
        return set(slots(name)) >= {slot_name_for(n) for n in names if n != name}

    for replica in set(names) - {old}:
        cluster3.wait_for(lambda r=replica: has_copies(r), 60, f"copies of the member slots on {replica}")
    candidate = sorted(set(names) - {old})[0]
    assert slot_name_for(old) in slots(candidate), "the new primary has the old one's slot beforehand"
    ctl(cluster3, old, "switchover", "--leader", old, "--candidate", candidate, "--force")
    assert wait_primary(cluster3, 60, exclude=old) == candidate
    sql(cluster3, candidate, "SELECT pg_switch_wal()")
    after = int(sql(cluster3, candidate, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])
    cluster3.wait_for(lambda: has_copies(old) and min(slots(old).values()) >= after, 60,
                      f"every slot on the former primary {old} moved past the switchover")


def test_remove_on_a_running_cluster_registers_the_same_data_again(cluster3):
    """``raftpgctl remove`` with patronictl's dialogue, while every agent runs: the DCS is wiped, the
    running primary registers its own data again (same system identifier, every row), and the replicas
    follow it; nobody bootstraps a new cluster."""
    old = cluster3.primary()
    sql(cluster3, old, "CREATE TABLE before_remove(x int); INSERT INTO before_remove VALUES (1)")
    sysid = cluster3.api(old, "/cluster")[1]["system_identifier"]
    assert sysid
    exe = os.path.join(os.path.dirname(sys.executable), "raftpgctl")
    argv = [exe] if os.path.exists(exe) else [sys.executable, "-m", "raftpg.cli.ctl"]
    wrong = subprocess.run([*argv, "-c", cluster3.config_path(old), "remove", cluster3.scope],
                           input=f"{cluster3.scope}\nYes I am aware\nnot-the-leader\n", capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 1 and "did not specify the current leader" in wrong.stdout + wrong.stderr
    done = subprocess.run([*argv, "-c", cluster3.config_path(old), "remove", cluster3.scope],
                          input=f"{cluster3.scope}\nYes I am aware\n{old}\n", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    cluster3.wait_for(lambda: cluster3.api(old, "/cluster")[1].get("system_identifier") == sysid
                      and cluster3.api(old, "/cluster")[1].get("leader") is not None, 60,
                      "the cluster registered again")
    primary = wait_primary(cluster3, 60)
    assert cluster3.api(primary, "/cluster")[1]["system_identifier"] == sysid
    wait_streaming(cluster3, primary, set(cluster3.nodes) - {primary}, 90)
    assert sql(cluster3, primary, "SELECT x FROM before_remove") == [(1,)]
