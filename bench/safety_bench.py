"""Issue 10's figures, side by side in one run (ttl 10 / loop_wait 1 / retry_timeout 4, three loopback nodes):

1. **bootstrap**: empty data directories to a primary with two *streaming* replicas.
2. **clean-stop handover**: SIGTERM to the primary agent's whole process group (what ``systemctl stop``
   and Ctrl-C do); time from the signal to the first write acknowledged by the new primary. The key is
   released at once, so this must not wait for the TTL.
3. **agent SIGKILL failover**: SIGKILL of only the primary's agent (its fencing supervisor stops
   PostgreSQL at once), once when that agent is also the Raft leader and once when it is a Raft
   follower; time from the kill to the first write on the new primary (the leader key must expire:
   about ttl after the last renewal).
4. **cut-off primary self-demotion** (root and jepsen-lite's namespaces only): the primary is cut from
   both other nodes; time from its last confirmed renewal *sent* to PostgreSQL refusing writes. Target:
   before ``ttl - safety_margin`` (10 - 5 = 5 s here), every run.

    python bench/safety_bench.py [--rounds 3] [--no-partition]

Run as root (agents run as the postgres OS user), under ``flock /tmp/raftpg-heavy.lock`` on a shared
machine. Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import Any

from fencing_bench import (
    DCS,
    LOG,
    TTL_S,
    Writer,
    format_row,
    partition_rounds,
    query,
    streaming,
    wait_for,
)

from raftpg.cli.local_cluster import LocalCluster

SAFETY_MARGIN_S = 5.0


def two_streaming(cluster: LocalCluster) -> str | None:
    primary = cluster.primary()
    if primary and set(cluster.nodes) - {primary} <= streaming(cluster.dsn(primary)):
        return primary
    return None


def bootstrap_rounds(base: str, rounds: int) -> list[float]:
    times = []
    for n in range(rounds):
        cluster = LocalCluster(os.path.join(base, f"boot{n}"), ["n1", "n2", "n3"], dcs=DCS)
        try:
            started = time.monotonic()
            cluster.start_all()
            wait_for(lambda c=cluster: two_streaming(c), 120, "a primary with two streaming replicas", 0.02)
            times.append(time.monotonic() - started)
            print(f"bootstrap round {n + 1}: {times[-1]:.2f} s", flush=True)
        finally:
            cluster.close(remove=True)
    return times


def raft_state(cluster: LocalCluster, name: str) -> str | None:
    code, body = cluster.api(name, "/patroni")
    return ((body or {}).get("raft") or {}).get("state") if code == 200 else None


def make_raft_leader(cluster: LocalCluster, name: str, leader: bool) -> None:
    """Move Raft leadership so that ``name`` is (``leader``) or is not the Raft leader."""
    current = next((n for n in cluster.nodes if raft_state(cluster, n) == "leader"), None)
    if current is None or (current == name) == leader:
        return
    target = name if leader else next(n for n in cluster.nodes if n != name)
    for _attempt in range(20):  # pysyncobj refuses while the target lacks the newest entry: retry
        request = urllib.request.Request(cluster.nodes[current].api_url + "/raft/leader", method="POST",
                                         data=json.dumps({"addr": cluster.nodes[target].raft_addr}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).read()
            break
        except OSError:
            time.sleep(0.2)
    wait_for(lambda: raft_state(cluster, target) == "leader", 30, f"{target} to lead Raft")


def to_first_write_on_new_primary(cluster: LocalCluster, old: str, fault: float, timeout_s: float) -> float:
    def written() -> float | None:
        new = cluster.primary()
        if new in (None, old):
            return None
        ok = query(cluster.dsn(new), "INSERT INTO fence_bench(v) VALUES (2)")
        return time.monotonic() if ok is not None else None
    return wait_for(written, timeout_s, "a write on a new primary", 0.02) - fault


def fault_rounds(base: str, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"clean stop (SIGTERM to the group)": [],
                                       "agent SIGKILL, Raft leader": [], "agent SIGKILL, Raft follower": []}
    cluster = LocalCluster(os.path.join(base, "faults"), ["n1", "n2", "n3"], dcs=DCS, extra={"*": {"log": LOG}})
    try:
        cluster.start_all()
        primary = wait_for(lambda: two_streaming(cluster), 120, "replicas")
        query(cluster.dsn(primary), "CREATE TABLE fence_bench(id bigserial PRIMARY KEY, v int)")
        for _ in range(rounds):
            for kind in results:
                old = wait_for(lambda: two_streaming(cluster), 180, "a healthy cluster")
                if kind.startswith("agent SIGKILL"):
                    make_raft_leader(cluster, old, leader=kind.endswith("leader"))
                writer = Writer(cluster.dsn(old)).start()
                try:
                    wait_for(lambda w=writer: w.acks() >= 20, 30, "writes")
                    fault = time.monotonic()
                    if kind.startswith("clean"):
                        cluster.signal_group(old, signal.SIGTERM)
                    else:
                        cluster.kill(old)
                    elapsed = to_first_write_on_new_primary(cluster, old, fault, 3 * TTL_S)
                finally:
                    writer.stop()
                results[kind].append(elapsed)
                print(f"{kind}: first write on the new primary {elapsed:.2f} s after the fault", flush=True)
                cluster.procs[old].wait(60)
                cluster.start(old)
    finally:
        cluster.close(remove="--keep" not in sys.argv)
    return results


def line(name: str, values: list[float], target: str = "") -> str:
    if not values:
        return f"| {name} | - | - | - | {target} |"
    return (f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f}-{max(values):.2f} s | "
            f"{len(values)} | {target} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-partition", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the clusters' directories (logs) afterwards")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="safety-bench-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        boot = bootstrap_rounds(base, args.rounds)
        faults = fault_rounds(base, args.rounds)
        partition: list[dict[str, Any]] = []
        skipped = "--no-partition" if args.no_partition else partition_rounds(base, args.rounds, partition)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nmachine: {platform.node()}, {os.cpu_count()} cores, {platform.python_version()}; "
          f"ttl {TTL_S} / loop_wait 1 / retry_timeout 4\n")
    print("| figure | median | min-max | runs | target |\n|---|---|---|---|---|")
    print(line("bootstrap to a primary with two streaming replicas", boot, "<= 5 s"))
    for kind, values in faults.items():
        print(line(f"{kind}: fault to first write on the new primary", values,
                   "at once (no TTL wait)" if kind.startswith("clean") else "about ttl"))
    demotions = [r["since_renewal"] for r in partition if r.get("since_renewal") is not None]
    print(line("cut-off primary: last renewal sent to writes refused", demotions,
               f"< ttl - safety_margin = {TTL_S - SAFETY_MARGIN_S:g} s, every run"))
    if skipped:
        print(f"(partition rounds skipped: {skipped})")
    for row in partition:
        print(format_row(row))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
