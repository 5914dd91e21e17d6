"""LocalCluster.destroy, the teardown of every integration test's cluster: all of a node's processes go, and
PostgreSQL's System V shared memory segment goes with them (a SIGKILLed postmaster would leave it behind,
one per node per test, towards the kernel's limit of 4096 segments)."""

from __future__ import annotations

import os
import tempfile

import pytest
from cluster_fixtures import streaming_replicas, wait_primary  # noqa: F401

from raftpg.cli.local_cluster import LocalCluster, _pids_with_arg, _running, descendants

pytestmark = [pytest.mark.integration]


def shm_ids() -> set[int]:
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[1]) for line in list(f)[1:]}


def pg_shm_id(cluster: LocalCluster, name: str) -> int:
    """The segment's id, from the last field of postmaster.pid ("key id")."""
    with open(os.path.join(cluster.node_dir(name), "data", "postmaster.pid")) as f:
        return int(f.read().splitlines()[6].split()[1])


def test_destroy_leaves_no_process_and_no_shared_memory(make_cluster) -> None:  # noqa: F811
    base = tempfile.mkdtemp(prefix="raftpg-destroy-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(base, ["n1", "n2", "n3"], python=os.environ.get("RAFTPG_PYTHON"))
    try:
        cluster.start_all()
        primary = wait_primary(cluster)
        cluster.wait_for(lambda: len(streaming_replicas(cluster, primary)) == 2, 90, "two streaming replicas")
        segments = {name: pg_shm_id(cluster, name) for name in cluster.nodes}
        agents = [cluster.pid(name) for name in cluster.nodes]
        tree = {pid for agent in agents if agent for pid in [agent, *descendants(agent)]}
        assert len(tree) > 3 * 2, f"expected agents, supervisors and PostgreSQL processes, found {tree}"
        assert set(segments.values()) <= shm_ids()

        cluster.destroy()

        assert not _pids_with_arg(base), "a process of the cluster outlived destroy()"
        alive = {pid for pid in tree if _running(pid)}
        assert not alive, f"processes of the cluster's trees outlived destroy(): {sorted(alive)}"
        left = set(segments.values()) & shm_ids()
        assert not left, f"shared memory segments left behind: {sorted(left)}"
    finally:
        cluster.destroy(remove=True)
