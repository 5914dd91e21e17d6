"""Patroni settings honoured by real agents and real PostgreSQL: pg_hba/pg_ident from edit-config on every node,
a user's unix_socket_directories, a custom bootstrap method, a command replica method, and a config generated
from a running PostgreSQL."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from cluster_fixtures import make_cluster, sql, streaming_replicas, try_sql, wait_primary  # noqa: F401

from raftpg.cli.genconfig import from_running
from raftpg.cli.local_cluster import LocalCluster
from raftpg.config import parse_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\nset -eu\n" + text)
    path.chmod(0o755)
    return str(path)


def chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(entry, user.pw_uid, user.pw_gid)


def hba_users(cluster: LocalCluster, name: str) -> set[str]:
    rows = try_sql(cluster, name, "SELECT unnest(user_name) FROM pg_hba_file_rules") or []
    return {r[0] for r in rows}


def test_pg_hba_and_pg_ident_from_edit_config_reach_every_node(make_cluster) -> None:  # noqa: F811
    cluster = make_cluster(["n1", "n2"])
    cluster.start_all()
    primary = wait_primary(cluster)
    cluster.wait_for(lambda: streaming_replicas(cluster, primary) == {"n1", "n2"} - {primary}, 120, "a replica")
    patch = {"postgresql": {
        "pg_hba": ["local all all scram-sha-256", "host replication replicator all scram-sha-256",
                   "host all marker_user 192.0.2.0/24 scram-sha-256", "host all all all scram-sha-256"],
        "pg_ident": ["ops root marker_user"]}}
    status, body = cluster.api_post(primary, "/config", patch, method="PATCH")
    assert status == 200, body
    for name in cluster.nodes:
        cluster.wait_for(lambda n=name: "marker_user" in hba_users(cluster, n), 30, f"the new pg_hba on {name}")
        idents = sql(cluster, name, "SELECT map_name, sys_name, pg_username FROM pg_ident_file_mappings")
        assert idents == [("ops", "root", "marker_user")]
    # the agents still reach their own PostgreSQL through the socket with the new rules
    cluster.wait_for(lambda: cluster.api(primary, "/primary")[0] == 200, 30, "the primary still healthy")


def test_a_users_unix_socket_directories_is_honoured(make_cluster) -> None:  # noqa: F811
    cluster = make_cluster(["n1"])
    sockets = Path(cluster.base_dir) / "sockets"
    cluster.extra = {"n1": {"postgresql": {"parameters": {"unix_socket_directories": str(sockets)}}}}
    cluster.write_configs()
    sockets.mkdir()
    chown_postgres(sockets)
    cluster.start("n1")
    wait_primary(cluster)
    port = cluster.nodes["n1"].pg_port
    assert stat.S_ISSOCK(os.stat(sockets / f".s.PGSQL.{port}").st_mode)
    assert not os.path.exists(os.path.join(cluster.node_dir("n1"), f".s.PGSQL.{port}"))
    assert sql(cluster, "n1", "SHOW unix_socket_directories") == [(str(sockets),)]
    assert sql(cluster, "n1", "SHOW cluster_name") == [("demo",)]  # the scope, as in Patroni


def test_custom_bootstrap_and_a_command_replica_method(make_cluster) -> None:  # noqa: F811
    work = Path("/tmp") / f"raftpg-methods-{os.getpid()}"
    work.mkdir(mode=0o755)
    try:
        _custom_bootstrap_and_replica(make_cluster, work)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def _custom_bootstrap_and_replica(make_cluster, work: Path) -> None:  # noqa: F811
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    bootstrap = write_script(work / "bootstrap.sh", f"""
printf '%s\n' "$@" > {work}/bootstrap.args
for arg in "$@"; do case "$arg" in --datadir=*) datadir="${{arg#--datadir=}}";; esac; done
{bin_dir}/initdb -D "$datadir" -U postgres >/dev/null
touch "$datadir/made-by-bootstrap-script"
""")
    backup = work / "backup"
    copy = write_script(work / "copy.sh", f"""
printf '%s\n' "$@" > {work}/copy.args
for arg in "$@"; do case "$arg" in --datadir=*) datadir="${{arg#--datadir=}}";; esac; done
for i in $(seq 1 600); do [ -e {work}/go ] && break; sleep 0.2; done  # a long copy, until the test says go
cp -a {backup}/. "$datadir"/
""")
    cluster = make_cluster(["n1", "n2", "w"], witnesses=("w",))  # n1 + the witness: a Raft quorum without n2
    cluster.extra = {"*": {
        "bootstrap": {"method": "scripted", "scripted": {
            "command": bootstrap, "recovery_conf": {"restore_command": "/bin/false"}, "label": "x"}},
        "postgresql": {"create_replica_methods": ["copy"], "copy": {"command": copy, "keep_data": False}}}}
    cluster.write_configs()
    chown_postgres(work)
    cluster.start("w")
    cluster.start("n1")
    assert wait_primary(cluster, 120) == "n1"
    data = Path(cluster.node_dir("n1")) / "data"
    assert (data / "made-by-bootstrap-script").exists()  # the method ran, not initdb
    assert not (data / "raftpg.bootstrap-recovery.conf").exists()  # removed once registered
    args = (work / "bootstrap.args").read_text().splitlines()
    assert args == ["--scope=demo", f"--datadir={data}", "--label=x"]
    # the roles exist: created once the recovery the recovery_conf asked for was over
    assert sql(cluster, "n1", "SELECT count(*) FROM pg_roles WHERE rolname IN ('replicator', 'rewind_user')") == [(2,)]
    sql(cluster, "n1", "CREATE TABLE t AS SELECT 42 AS v")
    env = {**os.environ, "PGPASSWORD": cluster.pg_passwords["replication"]}
    base = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*base, "env", f"PGPASSWORD={env['PGPASSWORD']}", str(bin_dir / "pg_basebackup"),
                    "-D", str(backup), "-h", "127.0.0.1", "-p", str(cluster.nodes["n1"].pg_port), "-U", "replicator",
                    "-X", "stream", "-c", "fast"], check=True, capture_output=True, timeout=120)
    cluster.start("n2")
    # the copy runs outside the HA loop: n2 answers, stays alive and is listed as being created meanwhile
    cluster.wait_for(lambda: (cluster.api("n2", "/patroni")[1] or {}).get("state") == "creating replica", 60,
                     "n2 reporting 'creating replica'")
    cluster.wait_for(lambda: any(m.get("name") == "n2" and m.get("state") == "creating replica"
                                 for m in (cluster.api("n1", "/cluster")[1] or {}).get("members", [])),
                     30, "n1 listing n2 as 'creating replica'")  # n1's view: as of its last cycle
    assert cluster.api("n2", "/liveness")[0] == 200
    (work / "go").touch()
    cluster.wait_for(lambda: streaming_replicas(cluster, "n1") == {"n2"}, 120, "n2 streaming")
    copy_args = (work / "copy.args").read_text().splitlines()
    data2 = Path(cluster.node_dir("n2")) / "data"
    assert copy_args[:3] == ["--scope=demo", "--role=replica", f"--datadir={data2}"]
    assert copy_args[3].startswith("--connstring=") and "user=replicator" in copy_args[3]
    assert cluster.wait_for(lambda: try_sql(cluster, "n2", "SELECT v FROM t"), 30, "the row on n2") == [(42,)]


def test_generate_config_from_a_running_postgresql(make_cluster) -> None:  # noqa: F811
    cluster = make_cluster(["n1"])
    cluster.start_all()
    wait_primary(cluster)
    config = from_running(cluster.dsn("n1"))
    pg = config["postgresql"]
    assert pg["data_dir"] == os.path.join(cluster.node_dir("n1"), "data")
    assert pg["listen"] == f"127.0.0.1:{cluster.nodes['n1'].pg_port}" and config["scope"] == "demo"
    assert pg["bin_dir"].startswith("/usr/lib/postgresql/")
    assert "host all all all scram-sha-256" in pg["pg_hba"]
    assert config["bootstrap"]["dcs"]["postgresql"]["parameters"]["max_connections"] == "50"
    assert pg["authentication"]["superuser"]["username"] == "postgres"
    parse_config(config)  # a usable config as generated
