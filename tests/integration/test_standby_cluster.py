"""Standby cluster end to end (``standby_cluster`` in the dynamic config): two raftpg clusters on loopback,
real agents and PostgreSQL 15, each on its own embedded Raft. The second is a standby cluster of the first:
its leader (the *standby leader*) streams from the first cluster's primary and the other members stream
from it. Killing the standby leader moves the role to another member, which keeps replicating; promoting
the standby cluster (``raftpgctl promote-cluster``) makes its standby leader a primary with every row.

Timing is never asserted; every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import sql, try_sql, wait_primary, wait_streaming
from test_synchronous import ctl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROFILE = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4}


def standby_leader(cluster: Any, exclude: str | None = None) -> str | None:
    found = [n for n in cluster.nodes if n != exclude and cluster.api(n, "/standby-leader")[0] == 200]
    return found[0] if len(found) == 1 else None


def rows(cluster: Any, name: str) -> set[int]:
    return {r[0] for r in try_sql(cluster, name, "SELECT v FROM dr_rows") or []}


def insert(cluster: Any, name: str, values: range) -> None:
    sql(cluster, name, "INSERT INTO dr_rows(v) SELECT generate_series(%s::int, %s::int)", (values.start, values.stop - 1))


def source_cluster(make_cluster: Any) -> tuple[Any, str]:
    """Two members on their own Raft, a primary with rows 0..99."""
    source = make_cluster(["a1", "a2"], dcs=PROFILE, scope="main")
    source.start_all()
    primary = wait_primary(source, 120)
    wait_streaming(source, primary, set(source.nodes) - {primary}, timeout_s=120)
    sql(source, primary, "CREATE TABLE dr_rows(v int PRIMARY KEY)")
    insert(source, primary, range(0, 100))
    return source, primary


def test_a_standby_cluster_replicates_survives_its_leader_and_is_promoted(make_cluster):
    source, primary = source_cluster(make_cluster)

    port = source.nodes[primary].pg_port
    # restore_command runs in the data directory: it notes whose it is, and finds nothing (streaming does)
    asked = Path(tempfile.mkdtemp(prefix="raftpg-restore-", dir="/tmp"))
    os.chmod(asked, 0o777)
    try:
        standby = {"host": "127.0.0.1", "port": port, "restore_command": f"pwd >> {asked}/asked; exit 1",
                   "recovery_min_apply_delay": "10ms"}
        dr = make_cluster(["b1", "b2", "b3"], dcs={**PROFILE, "standby_cluster": standby}, scope="dr")
        dr.pg_passwords = dict(source.pg_passwords)  # a copy of the source: its roles, its passwords
        dr.start_all()
        leader = dr.wait_for(lambda: standby_leader(dr), 180, "a standby leader in the standby cluster")
        others = set(dr.nodes) - {leader}
        wait_streaming(dr, leader, others, timeout_s=180)
        # the standby leader alone runs with standby_cluster's restore_command and delay
        assert sql(dr, leader, "SHOW recovery_min_apply_delay") == [("10ms",)]
        assert all(sql(dr, n, "SHOW recovery_min_apply_delay") == [("0",)] for n in others)
        assert all(sql(dr, n, "SHOW restore_command") == [("",)] for n in others)
        dr.wait_for(lambda: (asked / "asked").exists(), 60, "the standby leader to run restore_command")
        ran = {os.path.realpath(line) for line in (asked / "asked").read_text().split()}
        assert ran == {os.path.realpath(os.path.join(dr.node_dir(leader), "data"))}, ran
    finally:
        shutil.rmtree(asked, ignore_errors=True)
    # the standby leader streams from the source's primary, under its own name
    assert leader in {r[0] for r in sql(source, primary, "SELECT application_name FROM pg_stat_replication")}
    assert dr.primary() is None and all(dr.api(n, "/primary")[0] == 503 for n in dr.nodes)
    assert [dr.api(n, "/standby-leader")[0] for n in (leader, *sorted(others))] == [200, 503, 503]
    assert [dr.api(n, "/replica")[0] for n in (leader, *sorted(others))] == [503, 200, 200]
    assert dr.api(leader, "/read-only")[0] == 200 and dr.api(leader, "/leader")[0] == 200
    assert dr.api(leader, "/patroni")[1]["role"] == "standby_leader"
    expected = {leader: "Standby Leader", **dict.fromkeys(others, "Replica")}
    dr.wait_for(lambda: {row["Member"]: row["Role"] for row in json.loads(ctl(dr, leader, "list", "--format", "json"))}
                == expected, 30, f"raftpgctl list to show {expected}")  # member keys follow at each cycle's end
    insert(source, primary, range(100, 200))
    dr.wait_for(lambda: all(rows(dr, n) == set(range(200)) for n in dr.nodes), 60, "every row on every dr member")

    # the standby leader dies: another member takes the role and keeps replicating from the source
    dr.kill_node(leader)
    new_leader = dr.wait_for(lambda: standby_leader(dr, exclude=leader), 90, "a new standby leader")
    assert dr.primary() is None, "a standby cluster member promoted itself"
    insert(source, primary, range(200, 300))
    dr.wait_for(lambda: rows(dr, new_leader) == set(range(300)), 60, f"new rows on {new_leader}")
    dr.start(leader)  # comes back as a replica of the new standby leader
    wait_streaming(dr, new_leader, set(dr.nodes) - {new_leader}, timeout_s=180)
    dr.wait_for(lambda: all(rows(dr, n) == set(range(300)) for n in dr.nodes), 60, "every row on every dr member")

    # promote the standby cluster: its standby leader becomes a primary, with every row
    out = ctl(dr, new_leader, "promote-cluster", "--force")
    assert "being promoted" in out, out
    promoted = wait_primary(dr, 90)
    assert promoted == new_leader
    assert rows(dr, promoted) == set(range(300))
    insert(dr, promoted, range(300, 310))  # writable now
    wait_streaming(dr, promoted, set(dr.nodes) - {promoted}, timeout_s=120)
    assert all(dr.api(n, "/standby-leader")[0] == 503 for n in dr.nodes)
    assert rows(source, primary) == set(range(300)), "the source cluster never saw the promoted cluster's rows"


def test_a_bad_standby_cluster_setting_is_refused_by_name_before_anything_starts(make_cluster):
    dr = make_cluster(["b1"], dcs={**PROFILE, "standby_cluster": {"host": "127.0.0.1", "port": 5432,
                                                                  "recovery_min_apply_delay": "soon"}}, scope="dr")
    dr.write_configs()
    result = subprocess.run([sys.executable, "-m", "raftpg", "--validate-config", dr.config_path("b1")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "bootstrap.dcs.standby_cluster.recovery_min_apply_delay: must be a delay" in result.stdout + result.stderr


def test_demote_then_promote_swaps_the_roles_of_two_clusters(make_cluster):
    """A disaster-recovery switchover as Patroni's docs order it: demote the primary cluster onto the
    standby cluster's leader (both replicate, nobody writes), then promote the standby cluster. The old
    primary cluster then streams the new primary's timeline, with every row of both eras."""
    main, old_primary = source_cluster(make_cluster)
    dr = make_cluster(["b1", "b2"], scope="dr", dcs={**PROFILE, "standby_cluster": {
        "host": "127.0.0.1", "port": main.nodes[old_primary].pg_port}})
    dr.pg_passwords = dict(main.pg_passwords)
    dr.start_all()
    dr_leader = dr.wait_for(lambda: standby_leader(dr), 180, "the dr cluster's standby leader")
    dr.wait_for(lambda: rows(dr, dr_leader) == set(range(100)), 60, "the rows on the dr standby leader")

    out = ctl(main, old_primary, "demote-cluster", "--host", "127.0.0.1", "--port",
              str(dr.nodes[dr_leader].pg_port), "--force")
    assert "is now a standby cluster" in out, out
    main_leader = main.wait_for(lambda: standby_leader(main), 90, "the main cluster's standby leader")
    assert main_leader == old_primary and main.primary() is None
    ctl(dr, dr_leader, "promote-cluster", "--force")
    assert wait_primary(dr, 90) == dr_leader
    insert(dr, dr_leader, range(100, 200))
    main.wait_for(lambda: all(rows(main, n) == set(range(200)) for n in main.nodes), 120,
                  "the new primary's rows on every member of the demoted cluster")
    assert main.primary() is None and standby_leader(main) == old_primary
