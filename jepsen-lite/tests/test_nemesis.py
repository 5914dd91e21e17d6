"""Each fault proven on real namespaces and processes, independently of the fault's own verify():
a cut really drops traffic (both ways, or one way), a paused process is really stopped (state T),
a killed one is gone, the skewed clock really differs. No PostgreSQL: the "nodes" are sleepers.

Needs root (network namespaces, nftables, nsenter); skipped otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from raftpg.testing.poll import wait_until

from jepsen_lite.cluster import (
    PYTHON,
    ClusterOptions,
    Member,
    NodeProcesses,
    faked_wall_time,
    proc_state,
)
from jepsen_lite.nemesis import (
    Bridge,
    Clock,
    Env,
    Halves,
    IsolateRandom,
    KillAgent,
    OneWay,
    OneWayNew,
    PacketLoss,
    Pause,
    RestartCluster,
    Ring,
    Step,
)
from jepsen_lite.smallfs import SmallFs
from jepsen_lite.topology import HARNESS, Cut, Topology

pytestmark = pytest.mark.integration

NAMES = ["n1", "n2", "n3"]
CLOCK_PRINTER = ("import time, sys\n"
                 "while True:\n"
                 "    print(f'{time.time():.3f} {time.monotonic():.3f}', flush=True)\n"
                 "    time.sleep(0.2)\n")


def _need_root() -> None:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("nsenter"):
        pytest.skip("needs root, nft and nsenter (network namespaces)")


class Sleepers(NodeProcesses):
    """A stand-in node process: a Python loop printing its wall and monotonic clocks."""

    def write_files(self, member: Member) -> None:
        pass

    def argv(self, member: Member) -> list[str]:
        return [PYTHON, "-c", CLOCK_PRINTER]

    def raft_leader(self) -> str | None:
        return "n1"

    def last_clock_line(self, name: str) -> tuple[float, float] | None:
        lines = [ln.split() for ln in self.members[name].log_path.read_text().splitlines() if ln[:1].isdigit()]
        return (float(lines[-1][0]), float(lines[-1][1])) if lines else None


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    _need_root()
    t = Topology(NAMES)
    t.create()
    try:
        yield t
    finally:
        t.destroy()
        assert t.leftovers() == []
        assert subprocess.run(["ip", "link", "show", f"{t.prefix}h"], capture_output=True).returncode != 0


@pytest.fixture
def sleepers(topo: Topology) -> Iterator[Sleepers]:
    run_dir = Path(tempfile.mkdtemp(prefix="jl-nemesis-", dir="/tmp"))
    cluster = Sleepers(topo, run_dir, ClusterOptions(nodes=3, faketime=True))
    cluster.prepare()
    cluster.start_all()
    try:
        assert all(cluster.alive(n) for n in NAMES)
        yield cluster
    finally:
        cluster.close()
        assert all(not cluster.leftover_pids(n) for n in NAMES)
        shutil.rmtree(run_dir, ignore_errors=True)


def env(topo: Topology, cluster: NodeProcesses | None = None, seed: int = 1) -> Env:
    return Env(topo, cluster or Sleepers(topo, Path("/nonexistent"), ClusterOptions()), ttl_s=10, loop_wait_s=1,
               rng=random.Random(seed))


def delivered(topo: Topology) -> dict[tuple[str, str], bool]:
    return {(a, b): topo.udp_delivers(a, b, tries=2, wait_s=0.2) for a in NAMES for b in NAMES if a != b}


# ------------------------------------------------------------------------------------------ topology


def test_topology_connects_every_node_and_the_harness(topo: Topology) -> None:
    assert all(delivered(topo).values())
    for name in NAMES:
        assert topo.tcp_connects(HARNESS, name) and topo.tcp_connects(name, HARNESS)
        assert topo.addr(name).startswith(f"10.213.{topo.k}.")


def test_isolation_drops_both_ways_and_keeps_the_harness(topo: Topology) -> None:
    fault = IsolateRandom(env(topo), Step(0, "partition-random", 1, 1))
    details = fault.start()
    try:
        victim = details["victim"]
        seen = delivered(topo)
        for (a, b), ok in seen.items():
            assert ok == (victim not in (a, b)), (a, b, ok)
        assert topo.tcp_connects(HARNESS, victim), "clients must still reach an isolated node"
        assert fault.verify()[0]
    finally:
        fault.stop()
    assert all(delivered(topo).values()), "heal restores every link"
    assert "jepsen_lite" not in topo.nft_ruleset(victim)


def test_oneway_cut_drops_one_direction_only(topo: Topology) -> None:
    topo.apply([Cut("n1", "n2")])
    try:
        assert not topo.udp_delivers("n1", "n2")
        assert topo.udp_delivers("n2", "n1")
        assert topo.udp_delivers("n1", "n3") and topo.udp_delivers("n3", "n2")
    finally:
        topo.heal()
    fault = OneWay(env(topo), Step(0, "partition-oneway", 1, 1, {"from": "random"}))
    details = fault.start()
    try:
        assert not topo.udp_delivers(details["from"], details["to"])
        assert topo.udp_delivers(details["to"], details["from"])
        assert fault.verify()[0]
    finally:
        fault.stop()


def test_oneway_new_blocks_only_connections_opened_by_the_source(topo: Topology) -> None:
    fault = OneWayNew(env(topo, seed=3), Step(0, "partition-oneway-new", 1, 1, {"from": "random"}))
    details = fault.start()
    try:
        src, dst = details["from"], details["to"]
        assert not topo.tcp_connects(src, dst)
        assert topo.tcp_connects(dst, src), "replies to the other side's connections pass"
        assert fault.verify()[0]
    finally:
        fault.stop()
    assert topo.tcp_connects(src, dst)


@pytest.mark.parametrize("seed", [1, 2])
def test_halves_split_the_cluster(topo: Topology, seed: int) -> None:
    fault = Halves(env(topo, seed=seed), Step(0, "partition-halves", 1, 1))
    small, big = fault.start()["halves"]
    try:
        assert len(small) == 1 and len(big) == 2
        for (a, b), ok in delivered(topo).items():
            assert ok == ((a in small) == (b in small)), (a, b, ok)
    finally:
        fault.stop()


def test_ring_lets_each_node_hear_a_majority(topo: Topology) -> None:
    fault = Ring(env(topo), Step(0, "partition-ring", 1, 1))
    ring = fault.start()["ring"]
    try:
        seen = delivered(topo)
        for dst in NAMES:
            heard = [src for src in NAMES if src != dst and seen[(src, dst)]]
            assert len(heard) == 1, (dst, heard)  # itself + one other = a majority of 3
        i = ring.index("n1")
        assert seen[(ring[(i + 1) % 3], "n1")] and not seen[(ring[(i + 2) % 3], "n1")]
    finally:
        fault.stop()


def test_bridge_cuts_the_two_sides_but_not_the_bridge(topo: Topology) -> None:
    fault = Bridge(env(topo), Step(0, "partition-bridge", 1, 1))
    details = fault.start()
    try:
        (a,), (c,) = details["sides"]
        b = details["bridge"]
        seen = delivered(topo)
        assert not seen[(a, c)] and not seen[(c, a)]
        assert seen[(a, b)] and seen[(b, a)] and seen[(c, b)] and seen[(b, c)]
    finally:
        fault.stop()


# ------------------------------------------------------------------------------------------ processes


def test_node_processes_run_in_their_namespace_as_postgres(sleepers: Sleepers) -> None:
    pid = sleepers.pid("n2")
    assert pid is not None
    # the PID runs nsenter, then env, then python (each execs the next): the namespace and the user are
    # only certain once python itself runs. The command line of nsenter names python too, so look at the image.
    wait_until(lambda: "python" in os.readlink(f"/proc/{pid}/exe"), 10, "the tracked PID to be python itself",
               interval_s=0.01)
    assert os.stat(f"/run/netns/{sleepers.topology.netns('n2')}").st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    assert os.stat(f"/proc/{pid}").st_uid == (sleepers.user.pw_uid if sleepers.user else os.getuid())


def test_pause_really_stops_the_process(sleepers: Sleepers) -> None:
    fault = Pause(env(sleepers.topology, sleepers), Step(0, "pause", 1, 1, {"target": "random"}))
    details = fault.start()
    pid = details["pids"][0]
    try:
        # SIGSTOP is delivered asynchronously: a running process shows 'R' until it is scheduled out
        wait_until(lambda: proc_state(pid) == "T", 5, "the paused process to be stopped (T)", interval_s=0.01)
        size = sleepers.members[details["victim"]].log_path.stat().st_size
        time.sleep(0.8)
        assert sleepers.members[details["victim"]].log_path.stat().st_size == size, "a stopped process prints nothing"
        assert fault.verify()[0]
    finally:
        fault.stop()
    assert proc_state(pid) in ("S", "R")


def test_kill_removes_the_process_and_stop_restarts_it(sleepers: Sleepers) -> None:
    fault = KillAgent(env(sleepers.topology, sleepers), Step(0, "kill-agent", 1, 1, {"target": "random"}))
    details = fault.start()
    assert proc_state(details["pid"]) in (None, "Z")
    assert fault.verify()[0]
    fault.stop()
    assert sleepers.pid(details["victim"]) not in (None, details["pid"])


def test_restart_cluster_kills_everything_then_restarts(sleepers: Sleepers) -> None:
    fault = RestartCluster(env(sleepers.topology, sleepers), Step(0, "restart-cluster", 1, 1, {"stagger_s": [0.1]}))
    pids = fault.start()["pids"]
    assert len(pids) == 3 and all(proc_state(p) in (None, "Z") for p in pids)
    fault.stop()
    assert all(sleepers.alive(n) for n in NAMES)


def test_clock_offset_really_moves_the_wall_clock_only(sleepers: Sleepers) -> None:
    name = "n3"
    wait_until(lambda: all(sleepers.last_clock_line(n) for n in NAMES), 10, "every node to print its clock")
    sleepers.set_clock_offset(name, "+120s")
    assert abs(faked_wall_time(sleepers.clock_env(name)) - time.time() - 120) < 2
    assert abs(faked_wall_time({}) - time.time()) < 2

    def skew() -> float:
        line = sleepers.last_clock_line(name)
        assert line is not None
        return line[0] - time.time()

    # the running process (time.sleep works: monofix shim) sees +120 s
    wait_until(lambda: abs(skew() - 120) < 1.5, 5, f"{name} to see its clock 120 s ahead", interval_s=0.2)
    assert abs(sleepers.last_clock_line(name)[1] - time.monotonic()) < 2, "monotonic time is not faked"
    assert abs(sleepers.last_clock_line("n1")[0] - time.time()) < 1.5, "other nodes keep real time"
    fault = Clock(env(sleepers.topology, sleepers), Step(0, "clock", 1, 1, {"target": "random", "offset_s": -60}))
    details = fault.start()
    assert fault.verify()[0]
    fault.stop()
    assert abs(faked_wall_time(sleepers.clock_env(details["victim"])) - time.time()) < 2


# ------------------------------------------------------------------------------------------ issue 11


def test_packet_loss_drops_about_the_rate_and_heals(topo: Topology) -> None:
    fault = PacketLoss(env(topo), Step(0, "packet-loss", 1, 1, {"loss_pct": 50, "scope": "all"}))
    fault.start()
    try:
        loss = topo.udp_loss("n1", "n2", count=400)
        assert 0.35 <= loss <= 0.65, loss
        assert topo.udp_loss(HARNESS, "n2", count=200) < 0.05, "the harness's traffic is never dropped"
        ok, evidence = fault.verify()
        assert ok, evidence
    finally:
        fault.stop()
    assert topo.udp_loss("n1", "n2", count=200) < 0.05


def test_overlapping_layers_keep_each_others_cuts(topo: Topology) -> None:
    isolate = IsolateRandom(env(topo, seed=4), Step(1, "partition-random", 1, 1))
    loss = PacketLoss(env(topo), Step(2, "packet-loss", 1, 1, {"loss_pct": 30, "scope": "all"}))
    victim = isolate.start()["victim"]
    loss.start()
    try:
        assert isolate.verify()[0] and loss.verify()[0]
        loss.stop()
        assert isolate.verify()[0], "stopping one fault leaves the other's cuts"
    finally:
        isolate.stop()
        loss.stop()
    assert all(delivered(topo).values()), victim


def test_small_filesystem_fills_to_enospc_and_releases(tmp_path: Path) -> None:
    _need_root()
    fs = SmallFs(tmp_path / "fs", 8)
    fs.mount(None, None)
    try:
        assert fs.free_bytes() > 7 * 2**20
        fs.fill()
        assert fs.free_bytes() < 65536
        failed, error = fs.write_fails()
        assert failed and "ENOSPC" in error
        fs.release()
        assert fs.write_fails() == (False, "write succeeded")
    finally:
        fs.umount()
    assert not os.path.ismount(tmp_path / "fs")
