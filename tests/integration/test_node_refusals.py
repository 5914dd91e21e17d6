"""The agent refuses, with one line naming the key and before touching anything, a data directory that
PostgreSQL would refuse at every start (run as a user would: ``raftpg CONFIG.yml`` as the postgres user)."""

from __future__ import annotations

import os
import pwd

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("problem", ["mode", "version"])
def test_a_data_directory_postgresql_would_refuse_is_refused_at_start(make_cluster, problem) -> None:
    cluster = make_cluster(["n1"])
    cluster.write_configs()
    data_dir = os.path.join(cluster.node_dir("n1"), "data")
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "PG_VERSION"), "w") as f:
        f.write("16\n" if problem == "version" else "15\n")
    if cluster.run_as:
        user = pwd.getpwnam(cluster.run_as)
        for path in (data_dir, os.path.join(data_dir, "PG_VERSION")):
            os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(data_dir, 0o777 if problem == "mode" else 0o700)
    cluster.start("n1")
    code = cluster.procs["n1"].wait(60)
    with open(cluster.log_path("n1")) as f:
        log = f.read()
    assert code != 0, log
    assert "postgresql.data_dir:" in log and ("mode 0777" if problem == "mode" else "16") in log, log
    assert "Traceback" not in log
    assert sorted(os.listdir(data_dir)) == ["PG_VERSION"], "nothing was written into it"
