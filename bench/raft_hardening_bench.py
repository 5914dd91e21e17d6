"""The Raft node under abuse, in figures (never asserted in tests): three loopback driver processes.

    /opt/raftpg-venv/bin/python bench/raft_hardening_bench.py [--seconds 10]

1. commit latency through a follower, quiet, then while 2 GiB length prefixes and garbage flood the
   leader's Raft port (4 sockets) and each follower's (1 socket), reconnecting as they are closed; the
   leader's RSS before and at its peak; whether the term changed;
2. the same latency while 3000 idle connections sit on the leader's Raft port, and the descriptors
   the leader holds meanwhile;
3. with root: a follower's data directory on a 64 MiB tmpfs that gets filled: time until it refuses
   writes, commits by the others meanwhile, time until it has rejoined after the space is freed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from raft_attacks import Flood, IdleConnections, RssSampler, Writer, open_fds, percentile, rss_bytes  # noqa: E402
from raft_helpers import Cluster, Processes, wait_until  # noqa: E402


def latency_line(name: str, writer: Writer) -> str:
    lat = writer.latencies_s
    return (f"{name:<34} {len(lat):>6} commits  p50 {percentile(lat, 50) * 1000:6.1f} ms  "
            f"p99 {percentile(lat, 99) * 1000:6.1f} ms  max {max(lat, default=0) * 1000:7.1f} ms  "
            f"failures {len(writer.failures)}")


def timed_writes(node: object, prefix: str, seconds: float, during: threading.Event | None = None) -> Writer:
    writer = Writer(node, prefix).start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (during is None or not during.is_set()):
        time.sleep(0.1)
    writer.finish()
    return writer


def flood_and_idle(base: str, seconds: float) -> None:
    procs = Processes()
    try:
        cluster = Cluster(os.path.join(base, "flood"), procs).start()
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        term = leader.status()["term"]
        print(latency_line("quiet", timed_writes(follower, "quiet", seconds)))

        rss_before = rss_bytes(leader.proc.pid)
        sampler = RssSampler(leader.proc.pid).start()
        floods = [Flood(leader.raft_port, 4, 64 << 20, seconds).start()]
        floods += [Flood(n.raft_port, 1, 64 << 20, seconds).start() for n in cluster.nodes if n is not leader]
        writer = timed_writes(follower, "flood", seconds)
        for flood in floods:
            flood.join(60)
        rss_max = sampler.finish()
        print(latency_line("flood (2 GiB prefixes + garbage)", writer))
        print(f"{'':<34} {sum(sum(f.connections) for f in floods)} flooding connections; leader RSS "
              f"{rss_before / 2**20:.1f} -> peak {rss_max / 2**20:.1f} MiB; term {term} -> "
              f"{leader.status()['term']}")

        idle = IdleConnections(leader.raft_port, 3000).open()
        try:
            time.sleep(1)
            fds = open_fds(leader.proc.pid)
            print(latency_line("3000 idle Raft connections", timed_writes(follower, "idle", seconds)))
            print(f"{'':<34} leader holds {fds} descriptors")
        finally:
            idle.close()
    finally:
        procs.cleanup()


def full_disk(base: str) -> None:
    if os.geteuid() != 0:
        print("full disk: skipped (mounting a tmpfs needs root)")
        return
    procs = Processes()
    cluster = Cluster(os.path.join(base, "disk"), procs)
    victim = cluster.nodes[2]
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={64 << 20},mode=0700", "tmpfs", victim.data_dir],
                      capture_output=True).returncode != 0:
        print("full disk: skipped (cannot mount a tmpfs here)")
        return
    try:
        cluster.start()
        cluster.leader()
        filler = os.path.join(victim.data_dir, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        began = time.monotonic()
        try:
            for chunk in (1 << 20, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    continue
        finally:
            os.close(fd)
        wait_until(lambda: victim.status()["disk_full"], 30, "the full disk noticed")
        noticed = time.monotonic() - began
        others = [n for n in cluster.nodes if n is not victim]
        writer = timed_writes(cluster.leader(among=others), "full", 3.0)
        os.unlink(filler)
        freed = time.monotonic()
        wait_until(lambda: victim.status()["disk_full"] is None, 60, "the node rejoining")
        cluster.converged(cluster.nodes, timeout_s=60)
        print(f"full disk: refused writes {noticed * 1000:.0f} ms after the filesystem filled; "
              f"rejoined and caught up {time.monotonic() - freed:.1f} s after space was freed")
        print(latency_line("others while one disk is full", writer))
    finally:
        procs.cleanup()
        subprocess.run(["umount", victim.data_dir], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="raftpg-hardening-bench-")
    print(f"raftpg Raft hardening bench, {os.cpu_count()} CPUs; writes through a follower, one at a time")
    try:
        flood_and_idle(base, args.seconds)
        full_disk(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
