"""The agent under a service manager, with real processes: systemd's readiness protocol (READY=1 once the REST
API and the first HA cycle are up, STOPPING=1 on a stop), and the stop of a primary's process tree as each
systemd KillMode signals it (contrib/raftpg.service chooses KillMode=process, and says why)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from cluster_fixtures import make_cluster, streaming_replicas, wait_primary  # noqa: F401

from raftpg.cli.local_cluster import LocalCluster, descendants

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL_S = 60  # a takeover well inside this can only come from the key being handed over, not from expiry


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def cluster_state(cluster: LocalCluster, name: str) -> str:
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    out = subprocess.run([str(bin_dir / "pg_controldata"), os.path.join(cluster.node_dir(name), "data")],
                         capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Database cluster state"))


def test_ready_once_the_api_and_the_first_cycle_are_up_and_stopping_on_sigterm(make_cluster) -> None:  # noqa: F811
    cluster = make_cluster(["n1"])
    cluster.write_configs()
    path = os.path.join(cluster.base_dir, "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        os.chmod(path, 0o666)  # the agent runs as the postgres OS user
        if os.geteuid() == 0:
            os.chown(path, pwd.getpwnam("postgres").pw_uid, -1)
        listener.settimeout(120)
        cluster.start("n1", extra_env={"NOTIFY_SOCKET": path})
        ready = listener.recv(4096).decode()
        # the moment systemd would consider the unit started: the API answers, the loop has cycled
        status, body = cluster.api("n1", "/patroni")
        assert ready.startswith("READY=1\nSTATUS=raftpg ") and "n1 in cluster demo" in ready
        assert status == 200 and body["state"] != "" and cluster.api("n1", "/liveness")[0] == 200
        cluster.signal("n1", signal.SIGTERM)
        assert listener.recv(4096) == b"STOPPING=1"
    assert cluster.procs["n1"].wait(120) == 0


@pytest.mark.parametrize("kill_mode", ["process", "mixed", "control-group"])
def test_stopping_the_primary_as_each_kill_mode_does(make_cluster, kill_mode: str) -> None:  # noqa: F811
    # a witness keeps the Raft majority while the primary's agent is down
    cluster = make_cluster(["n1", "n2", "w"], witnesses=("w",), dcs={"ttl": TTL_S, "loop_wait": 1, "retry_timeout": 4})
    cluster.start_all()
    primary = wait_primary(cluster)
    other = next(n for n in ("n1", "n2") if n != primary)
    cluster.wait_for(lambda: streaming_replicas(cluster, primary) == {other}, 120, "the replica streaming")
    agent = cluster.pid(primary)
    assert agent is not None
    tree = descendants(agent)
    assert cluster.postmaster_pid(primary) in tree  # supervisor, postmaster, backends
    if kill_mode == "control-group":
        cluster.signal_tree(primary, signal.SIGTERM)  # everybody at once
    else:
        cluster.signal(primary, signal.SIGTERM)  # the main process only
    assert cluster.procs[primary].wait(120) == 0  # within TimeoutStopSec, a clean exit
    left = [pid for pid in tree if alive(pid)]
    if kill_mode == "mixed":
        for pid in left:  # what systemd does next under KillMode=mixed
            os.kill(pid, signal.SIGKILL)
    assert left == []  # nothing of the tree was left for systemd to kill: the agent stopped it in order
    assert cluster_state(cluster, primary) == "shut down"  # a clean shutdown, not a kill
    # the leader key was handed over: the replica takes over long before the ttl could expire
    assert wait_primary(cluster, timeout_s=TTL_S / 2, exclude=primary) == other
