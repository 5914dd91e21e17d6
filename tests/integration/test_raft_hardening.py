"""The Raft port and data directory under abuse, with real driver processes (issue 12 items 1-3 and 11,
issue 10 item 11): floods, thousands of idle connections, file modes, a full disk.

Each test owns its cluster (fresh ports, data dirs under tmp_path); processes are killed by PID at the
end; waiting is polling against a deadline. Figures are printed (``-s``), never asserted as times.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from raft_attacks import (
    HUGE_PREFIX,
    Flood,
    IdleConnections,
    RssSampler,
    Writer,
    nofile_limits,
    open_fds,
    percentile,
    rss_bytes,
)
from raft_helpers import Cluster, Node, Processes, wait_until

from raftpg.cli.local_cluster import LocalCluster

pytestmark = pytest.mark.integration

PASSWORD = "hardening-password"
# Under the caps of consensus/wire.py and transport.py a node holds, for strangers, at most
# 64 connections x 64 KiB of read buffer (4 MiB) plus one 256 KiB burst at a time. 32 MiB above the
# RSS before the flood leaves room for allocator noise; without the caps each flooding socket's stream
# is buffered whole (4 sockets x 64 MB here).
FLOOD_RSS_GROWTH_MAX = 32 * 1024 * 1024
FLOOD_SOCKETS = 4
FLOOD_BYTES_PER_SOCKET = 64 * 1024 * 1024
FLOOD_MIN_S = 10.0  # many election timeouts (0.7-1.7 s): a stalled tick thread would show


@pytest.fixture
def procs():
    owner = Processes()
    try:
        yield owner
    finally:
        owner.cleanup()


def terms(cluster: Cluster) -> set[int]:
    return {n.status()["term"] for n in cluster.nodes}


def test_a_flood_of_huge_frames_neither_changes_the_leader_nor_stops_commits(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD).start()
    leader = cluster.leader()
    assert leader.put("before", "1").ok
    term_before = terms(cluster)
    assert len(term_before) == 1
    rss_before = rss_bytes(leader.proc.pid)
    sampler = RssSampler(leader.proc.pid).start()
    writer = Writer(next(n for n in cluster.nodes if n is not leader), "flood").start()
    floods = [Flood(leader.raft_port, FLOOD_SOCKETS, FLOOD_BYTES_PER_SOCKET, FLOOD_MIN_S).start()]
    floods += [Flood(n.raft_port, 1, FLOOD_BYTES_PER_SOCKET, FLOOD_MIN_S).start()
               for n in cluster.nodes if n is not leader]
    try:
        for flood in floods:
            flood.join(timeout_s=120)
    finally:
        for flood in floods:
            flood.stop.set()
        writer.finish()
        rss_max = sampler.finish()
    sent = sum(sum(f.sent) for f in floods)
    connections = sum(sum(f.connections) for f in floods)
    lat = writer.latencies_s
    print(f"\nflood: {sent / 2**20:.0f} MiB sent over {connections} connections; {len(lat)} commits during it, "
          f"latency p50 {percentile(lat, 50) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms, "
          f"max {max(lat, default=0) * 1000:.1f} ms, mean {statistics.fmean(lat) * 1000 if lat else 0:.1f} ms; "
          f"leader RSS {rss_before / 2**20:.1f} -> max {rss_max / 2**20:.1f} MiB")

    assert writer.failures == []
    assert len(lat) >= 20, "commits did not continue during the flood"
    assert terms(cluster) == term_before, "the flood caused an election"
    assert cluster.leader() is leader
    assert rss_max - rss_before < FLOOD_RSS_GROWTH_MAX
    assert "refused a connection" in leader.log_text()
    assert any(f.connections[0] > 1 for f in floods), "the server never closed a flooding connection"
    cluster.converged(cluster.nodes)
    assert cluster.nodes[0].value("before") == "1"


# ------------------------------------------------------------------------------------------ passwords


def test_the_driver_refuses_to_run_without_a_password_and_takes_one_from_the_environment(tmp_path, procs):
    node = Cluster(str(tmp_path), procs, size=1).nodes[0]
    node.password = None
    assert node.run_to_exit() == 2
    assert "error: raft.password: required" in node.log_text()
    node.env = {"RAFTPG_RAFT_PASSWORD": PASSWORD}
    node.start()
    assert node.put("k", "v").ok
    assert PASSWORD not in " ".join(node.command())  # the environment kept it off the command line


# ------------------------------------------------------------------------------------------ idle connections

IDLE_CONNECTIONS = 3000  # per port: far more than the node's open-files limit below
NOFILE_SOFT, NOFILE_HARD = 256, 512  # the node starts with a low soft limit and raises it to the hard one


@pytest.fixture
def witnesses():
    """Three witness agents (Raft and REST, no PostgreSQL); w1 starts with a low open-files limit."""
    base = tempfile.mkdtemp(prefix="raftpg-idle-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(base, ["w1", "w2", "w3"], witnesses=("w1", "w2", "w3"))
    try:
        cluster.write_configs()
        cluster.start("w1", prefix=["prlimit", f"--nofile={NOFILE_SOFT}:{NOFILE_HARD}", "--"])
        cluster.start("w2")
        cluster.start("w3")
        yield cluster
    finally:
        for name in cluster.nodes:  # captured: shown only when the test fails
            with contextlib.suppress(OSError), open(cluster.log_path(name), errors="replace") as f:
                print(f"----- {name} agent.log (last lines) -----\n" + "".join(f.readlines()[-40:]))
        cluster.destroy(remove=True)


def raft_status(cluster: LocalCluster, name: str, timeout_s: float = 2.0) -> dict | None:
    code, body = cluster.api(name, "/patroni", timeout_s=timeout_s)
    return body.get("raft") if code == 200 and isinstance(body, dict) else None


def committing(cluster: LocalCluster, name: str) -> bool:
    """The Raft commit index seen by ``name`` moves (the agents renew their member keys every loop_wait)."""
    first = raft_status(cluster, name)
    if first is None or not first["has_quorum"]:
        return False
    return bool(wait_until(lambda: (now := raft_status(cluster, name)) and now["commit_index"] > first["commit_index"],
                           15, f"{name}'s commit index moving"))


def listener_answers(port: int) -> bool:
    """The Raft port accepts a connection and closes it for its 2 GiB prefix (a closed listener refuses)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(HUGE_PREFIX + b"x" * 16)
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True


def test_thousands_of_idle_connections_neither_lock_out_health_checks_nor_stop_raft(witnesses):
    cluster, w1 = witnesses, witnesses.nodes["w1"]
    wait_until(lambda: cluster.api("w1", "/liveness")[0] == 200 and committing(cluster, "w1"), 60, "w1 serving")
    pid = cluster.pid("w1")
    assert nofile_limits(pid) == (NOFILE_HARD, NOFILE_HARD)  # raised at start

    idle = [IdleConnections(w1.api_port, IDLE_CONNECTIONS).open(), IdleConnections(w1.raft_port, IDLE_CONNECTIONS).open()]
    try:
        for _ in range(5):  # health checks get in, again and again, while the idle connections stay open
            wait_until(lambda: cluster.api("w1", "/liveness", timeout_s=2.0)[0] == 200, 30, "a health check on w1")
        assert committing(cluster, "w1") and committing(cluster, "w2")
        status = raft_status(cluster, "w1")
        assert status is not None and all(m["connected"] for m in status["members"])
        print(f"\nidle: w1 holds {open_fds(pid)} descriptors with {2 * IDLE_CONNECTIONS} idle clients "
              f"(limit {NOFILE_HARD})")
        assert open_fds(pid) < NOFILE_HARD
    finally:
        for conns in idle:
            conns.close()

    wait_until(lambda: cluster.api("w1", "/liveness")[0] == 200, 30, "a health check on w1 afterwards")
    assert listener_answers(w1.raft_port)
    cluster.stop("w2")  # a member comes back: its connection to w1 is made again from scratch
    cluster.start("w2")
    wait_until(lambda: (s := raft_status(cluster, "w1")) and all(m["connected"] for m in s["members"]), 30,
               "w2 connected to w1 again")
    assert committing(cluster, "w1")
    with open(cluster.log_path("w1"), errors="replace") as f:
        assert "Traceback" not in f.read()


# ------------------------------------------------------------------------------------------ full disk

SMALL_FS_BYTES = 64 * 1024 * 1024  # > 2 x the 16 MiB a node wants free before it rejoins, plus its journal


@contextlib.contextmanager
def small_filesystem(path: str, size_bytes: int) -> Iterator[str]:
    """A size-limited tmpfs mounted on ``path`` (0700, as a Raft data directory must be) for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", path],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path: str) -> str:
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def make_leader(cluster: Cluster, node: Node) -> None:
    def leads() -> bool:
        leader = cluster.leader()
        if leader is node:
            return True
        leader.request("POST", "/transfer", {"addr": node.addr})
        return False
    wait_until(leads, 30, f"{node.name} leading")


def test_a_full_disk_fails_writes_closed_and_the_node_recovers_when_space_returns(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD)
    victim, others = cluster.nodes[2], cluster.nodes[:2]
    with small_filesystem(victim.data_dir, SMALL_FS_BYTES) as mount:
        try:
            cluster.start()
            make_leader(cluster, victim)  # the hardest case: the full node leads
            assert victim.put("before", "1").ok
            filler = fill(mount)

            # Writes through the full node go on into its preallocated journal until it notices (the old
            # sparse journal died of SIGBUS here after a few), then are refused with a clear error.
            writes = iter(range(10**6))
            refused = wait_until(lambda: (r := victim.put(f"full-{next(writes)}", "x" * 1000)).status == 507 and r,
                                 30, "a write refused because the disk is full")
            assert refused.body["error"] == "disk_full" and refused.body["indeterminate"] is False, refused
            assert "raft.data_dir" in refused.body["message"] and "full" in victim.status()["disk_full"]
            assert victim.alive
            new_leader = cluster.leader(among=others)  # the others carry on without it
            for i in range(200):
                cluster.write_until_ok(new_leader, f"during-{i}", "x" * 1000)
            assert victim.alive and victim.status()["running"]  # no SIGBUS
            assert victim.value("before", linearizable=False) == "1"  # it keeps answering

            os.unlink(filler)
            wait_until(lambda: victim.status()["disk_full"] is None, 20, "the node rejoining")
            cluster.converged(cluster.nodes)
            cluster.write_until_ok(victim, "after", "1")
            assert new_leader.value("after") == "1" and victim.value("during-199") == "x" * 1000
            assert "the filesystem is full" in victim.log_text() and "has room again" in victim.log_text()
        finally:
            procs.cleanup()  # before unmounting: the node holds its journal open
