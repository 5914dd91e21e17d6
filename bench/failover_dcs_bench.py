"""Unplanned failover on the embedded Raft store and on etcd, in one run, with the same settings.

The measurement of failover_bench.py: a client inserts a row every 20 ms into whichever node GET /primary
names; SIGKILL the primary's agent and PostgreSQL together; time from the kill to the first successful
insert on a new primary. N runs per store, then median and min-max for each, and the ratio etcd/raft of
the medians. etcd is Debian's etcd-server 3.4, one member on loopback, started and stopped by PID
(tests/integration/etcd_fixtures.py): it never fails here, so both stores detect the dead primary the same
way, by its leader key's TTL; what differs is the store's path (embedded Raft vs. HTTP to etcd). Prints a
table; nothing is asserted.

    python bench/failover_dcs_bench.py [--runs 5] [--setting 10/1/4]

Run as root (agents run as the postgres OS user) or as a user that may run PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from etcd_fixtures import etcd_binary, start_etcd  # noqa: E402
from failover_bench import Client  # noqa: E402

from raftpg.cli.local_cluster import LocalCluster  # noqa: E402


def failover_gaps(dcs_section: dict[str, Any] | None, ttl: int, loop_wait: int, retry: int,
                  runs: int, label: str) -> list[float]:
    base = tempfile.mkdtemp(prefix=f"raftpg-bench-{label}-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(base, ["n1", "n2", "n3"], dcs={"ttl": ttl, "loop_wait": loop_wait,
                                                           "retry_timeout": retry}, dcs_section=dcs_section)
    gaps: list[float] = []
    try:
        cluster.start_all()
        primary = cluster.wait_for(cluster.primary, 120, "a primary")
        with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
            conn.execute("CREATE TABLE bench(v int)")
        for run in range(runs):
            primary = cluster.wait_for(cluster.primary, 120, "a primary")
            cluster.wait_for(lambda p=primary: all(cluster.api(n, "/replica")[0] == 200 for n in cluster.nodes
                                                   if n != p), 120, "two streaming replicas")
            client = Client(cluster)
            client.start()
            cluster.wait_for(lambda c=client: len(c.ok) > 25, 30, "writes before the fault")
            killed_at = time.monotonic()
            cluster.kill_node(primary)
            first = cluster.wait_for(lambda c=client, t=killed_at, p=primary: c.first_ok_after(t, p), 180,
                                     "writes on a new primary")
            client.stop()
            gaps.append(first - killed_at)
            print(f"  {label} {ttl}/{loop_wait}/{retry} run {run + 1}: {gaps[-1]:.2f}s to the first write on "
                  f"{cluster.primary()}", flush=True)
            cluster.start(primary)
    finally:
        cluster.close(remove=True)
    return gaps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--setting", default="10/1/4", help="ttl/loop_wait/retry_timeout, the same for both")
    args = parser.parse_args()
    if etcd_binary() is None:
        print("etcd is not installed (Debian package etcd-server)", file=sys.stderr)
        return 2
    ttl, loop_wait, retry = (int(x) for x in args.setting.split("/"))
    results = {"raft": failover_gaps(None, ttl, loop_wait, retry, args.runs, "raft")}
    etcd = start_etcd()
    try:
        section = {"etcd3": {"hosts": [etcd.endpoint]}}
        results["etcd"] = failover_gaps(section, ttl, loop_wait, retry, args.runs, "etcd")
    finally:
        etcd.cleanup()
    print(f"\nunplanned failover (SIGKILL agent + PostgreSQL), ttl/loop_wait/retry {args.setting}, "
          f"{args.runs} runs each; machine: {os.cpu_count()} cores")
    print("| store | median | min-max |")
    print("|---|---|---|")
    for store, gaps in results.items():
        print(f"| {store} | {statistics.median(gaps):.2f} s | {min(gaps):.2f}-{max(gaps):.2f} s |")
    ratio = statistics.median(results["etcd"]) / statistics.median(results["raft"])
    print(f"\nratio of medians etcd/raft: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
