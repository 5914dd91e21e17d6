"""Migration, for real: a Patroni 4.1.5 + etcd cluster with data is stopped, raftpg starts on the same data
directories with the same Patroni config (a ``raft:`` section added), keeps the system identifier, the
primary and every row, and fails over (docs/migrating-from-patroni.md, "From Patroni to raftpg").

Patroni comes from the package registry into a test-only virtualenv (``scripts/patroni-venv.sh``,
/opt/patroni-venv); etcd is Debian's. The test skips, saying why, when either cannot be had.
"""

from __future__ import annotations

import copy
import os
import pwd
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_fixtures import make_cluster, sql, streaming_replicas, try_sql  # noqa: F401
from etcd_fixtures import etcd_server  # noqa: F401

from raftpg.cli.local_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROWS = 2000


def patroni_python() -> str:
    """The test-only venv's python, installed by scripts/patroni-venv.sh if missing (skip if impossible)."""
    try:
        done = subprocess.run(["sh", str(REPO / "scripts" / "patroni-venv.sh")], capture_output=True, text=True,
                              timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Patroni 4.1.5 could not be installed into /opt/patroni-venv: {exc}")
    if done.returncode != 0:
        pytest.skip("Patroni 4.1.5 could not be installed into /opt/patroni-venv "
                    f"(scripts/patroni-venv.sh: {done.stderr.strip()[-300:]})")
    return done.stdout.strip().splitlines()[-1]


def patroni_config(cluster: LocalCluster, name: str, etcd_endpoint: str) -> dict[str, Any]:
    """The Patroni config of member ``name``, on the ports LocalCluster chose for it."""
    spec = cluster.nodes[name]
    node_dir = cluster.node_dir(name)
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    return {
        "scope": "migrate", "namespace": "/service/", "name": name,
        "restapi": {"listen": f"127.0.0.1:{spec.api_port}", "connect_address": f"127.0.0.1:{spec.api_port}"},
        "etcd3": {"hosts": etcd_endpoint},
        "bootstrap": {"dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
                              "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                             "parameters": {"max_connections": 50, "shared_buffers": "32MB",
                                                            "wal_keep_size": "128MB", "wal_log_hints": "on"}}},
                      "initdb": [{"encoding": "UTF8"}, "data-checksums"]},
        "postgresql": {
            "listen": f"127.0.0.1:{spec.pg_port}", "connect_address": f"127.0.0.1:{spec.pg_port}",
            "data_dir": os.path.join(node_dir, "data"), "bin_dir": str(bin_dir),
            "pgpass": os.path.join(node_dir, "pgpass-patroni"),
            "authentication": {role: {"username": user, "password": cluster.pg_passwords[role]}
                               for role, user in cluster.pg_users.items()},
            "pg_hba": ["local all all scram-sha-256", "host replication replicator 127.0.0.1/32 scram-sha-256",
                       "host all all 127.0.0.1/32 scram-sha-256"],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def with_raft(cluster: LocalCluster, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """What the migration guide says to add: a raft section (the etcd3 section may stay: raft wins)."""
    spec = cluster.nodes[name]
    out = copy.deepcopy(config)
    out["raft"] = {"data_dir": os.path.join(cluster.node_dir(name), "raft"), "self_addr": spec.raft_addr,
                   "partner_addrs": [n.raft_addr for n in cluster.nodes.values() if n.name != name],
                   "password": cluster.raft_password}
    return out


class PatroniProcesses:
    def __init__(self, python: str, cluster: LocalCluster) -> None:
        self.python, self.cluster, self.procs = python, cluster, {}

    def start(self, name: str) -> None:
        user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        path = os.path.join(self.cluster.node_dir(name), "patroni.yml")
        log = open(os.path.join(self.cluster.node_dir(name), "patroni.log"), "ab")
        kwargs: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        env = {**os.environ, "HOME": user.pw_dir if user else os.environ.get("HOME", "/tmp")}
        self.procs[name] = subprocess.Popen([self.python, "-m", "patroni", path], stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.cluster.node_dir(name), env=env, start_new_session=True, **kwargs)
        log.close()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # Patroni stops its PostgreSQL (the cluster is not paused)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def control_state(cluster: LocalCluster, name: str) -> str:
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    out = subprocess.run([str(bin_dir / "pg_controldata"), os.path.join(cluster.node_dir(name), "data")],
                         capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Database cluster state"))


def test_patroni_cluster_moves_to_raftpg_and_fails_over(make_cluster, etcd_server) -> None:  # noqa: F811
    python = patroni_python()
    # two data members, as Patroni ran them, and a raftpg witness: the third Raft vote that lets the former
    # primary register its data before the replica's agent starts (docs/migrating-from-patroni.md, step 4)
    cluster: LocalCluster = make_cluster(["p1", "p2", "w"], witnesses=("w",))
    configs = {name: patroni_config(cluster, name, etcd_server.endpoint) for name in ("p1", "p2")}
    witness_config = cluster.config_for
    cluster.config_for = lambda name: (  # type: ignore[method-assign]
        witness_config(name) if name == "w" else with_raft(cluster, name, configs[name]))
    cluster.write_configs()  # node directories (owned by postgres) and raftpg.yml
    for name, config in configs.items():
        cluster._write_private(os.path.join(cluster.node_dir(name), "patroni.yml"), yaml.safe_dump(config))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(os.path.join(cluster.node_dir(name), "patroni.yml"), user.pw_uid, user.pw_gid)
    patroni = PatroniProcesses(python, cluster)
    try:
        # --- a Patroni cluster with data
        patroni.start("p1")
        cluster.wait_for(lambda: cluster.primary() == "p1", 120, "Patroni to bootstrap p1")
        patroni.start("p2")
        cluster.wait_for(lambda: streaming_replicas(cluster, "p1") == {"p2"}, 120, "Patroni's replica p2")
        sql(cluster, "p1", "CREATE TABLE migrated (id int PRIMARY KEY, note text)")
        sql(cluster, "p1", "INSERT INTO migrated SELECT g, md5(g::text) FROM generate_series(1, %s) g", (ROWS,))
        sysid = sql(cluster, "p1", "SELECT system_identifier FROM pg_control_system()")[0][0]
        cluster.wait_for(lambda: try_sql(cluster, "p2", "SELECT count(*) FROM migrated") == [(ROWS,)], 60,
                         "the rows on Patroni's replica")
        # --- stop Patroni, replicas first: its PostgreSQL servers shut down cleanly
        patroni.stop("p2")
        patroni.stop("p1")
        assert control_state(cluster, "p1") == "shut down"
    finally:
        patroni.close()
    # --- raftpg on the same data directories and config (+ raft): the old primary first (with the witness)
    cluster.start("w")
    cluster.start("p1")
    cluster.wait_for(lambda: cluster.primary() == "p1", 120, "raftpg to adopt p1 as the primary")
    cluster.start("p2")
    cluster.wait_for(lambda: streaming_replicas(cluster, "p1") == {"p2"}, 120, "p2 streaming under raftpg")
    assert sql(cluster, "p1", "SELECT system_identifier FROM pg_control_system()")[0][0] == sysid
    assert sql(cluster, "p1", "SELECT count(*), sum(id) FROM migrated") == [(ROWS, ROWS * (ROWS + 1) // 2)]
    sql(cluster, "p1", "INSERT INTO migrated VALUES (0, 'written under raftpg')")
    cluster.wait_for(lambda: try_sql(cluster, "p2", "SELECT count(*) FROM migrated") == [(ROWS + 1,)], 60,
                     "the new row on p2")
    status, body = cluster.api("p1", "/patroni")
    assert status == 200 and body["database_system_identifier"] == str(sysid)
    # --- and it fails over: the primary's agent and PostgreSQL die together
    cluster.kill_node("p1")
    cluster.wait_for(lambda: cluster.primary() == "p2", 120, "p2 to take over")
    assert sql(cluster, "p2", "SELECT count(*) FROM migrated") == [(ROWS + 1,)]
    assert sql(cluster, "p2", "SELECT system_identifier FROM pg_control_system()")[0][0] == sysid
