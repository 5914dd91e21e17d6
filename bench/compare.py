"""raftpg and Patroni 4.1.5 side by side: the same three-node loopback cluster, the same profile, one run.

Setups (``--setups``, each ``SYSTEM-DCS@ttl/loop_wait/retry_timeout``): Patroni with its own Raft and with
etcd, raftpg with its embedded Raft and with etcd, all at 20/1/4 (Patroni refuses a ttl under 20); raftpg
alone at 10/1/4, 5/1/2 and 4/1/1 (its shortest: raftpg refuses a ttl under 4). etcd is Debian's
etcd-server, one member on loopback, started afresh for each setup (tests/integration/etcd_fixtures.py).
Patroni runs from the bench-only virtualenv that ``scripts/patroni-venv.sh`` makes; raftpg from this
checkout (raftpg.cli.local_cluster.LocalCluster). Both get the same data-directory layout, SCRAM passwords,
PostgreSQL parameters and bootstrap.dcs (bench/patroni_cluster.py).

Figures, per setup (``--trials`` of each, medians and min-max; the ratio is raftpg / Patroni on the same
DCS and profile):
- **bootstrap**: from launching the three agents on empty directories to a primary with two replicas
  *streaming* (its pg_stat_replication, polled every 50 ms); a fresh cluster per trial.
- **idle footprint**: each agent's process tree without PostgreSQL (raftpg: agent + fencing supervisor;
  anything short-lived they start is counted through the agent's reaped-children CPU), mean RSS (and PSS)
  and CPU (% of one core) over ``--idle-s`` seconds once the cluster has settled; for etcd, the etcd
  server's CPU over the same window and the requests it served per second, by gRPC method (its metrics).
- **GET /primary latency** on the primary: one keep-alive client, back to back, p50/p99.
- **switchover write gap**: a client inserting every 5 ms into whichever node answers GET /primary; POST
  /switchover to the primary naming a streaming replica; last write acknowledged by the old primary to the
  first acknowledged by the new one.
- **unplanned failover**: SIGKILL of the primary's agent and PostgreSQL together; from the kill to the first
  write acknowledged by a new primary (and acknowledged rows lost).

Results go to ``--out`` (one JSON file per setup, so a long comparison can run in pieces under the shared
heavy lock) and every setup found there is printed. Nothing is asserted.

    flock /tmp/raftpg-heavy.lock python bench/compare.py [--setups patroni-raft@20/1/4,raftpg-raft@20/1/4]
        [--trials 3] [--idle-s 30] [--requests 2000] [--out /tmp/raftpg-compare] [--report]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict
from typing import Any

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from compare_report import report  # noqa: E402
from etcd_fixtures import etcd_binary, start_etcd  # noqa: E402
from measure import (  # noqa: E402
    Writer,
    footprints,
    get_latencies_ms,
    load_average,
    lost_rows,
    settled,
    time_to_bootstrap,
    wait_for,
)
from patroni_cluster import PatroniCluster, ensure_patroni  # noqa: E402

from raftpg.cli.local_cluster import LocalCluster  # noqa: E402

DEFAULT_SETUPS = ("patroni-raft@20/1/4,patroni-etcd@20/1/4,raftpg-raft@20/1/4,raftpg-etcd@20/1/4,"
                  "raftpg-raft@10/1/4,raftpg-raft@5/1/2,raftpg-raft@4/1/1")
FIGURES = ("bootstrap", "footprint", "latency", "switchover", "failover")
_STARTED = re.compile(r'^grpc_server_started_total\{grpc_method="(\w+)",grpc_service="etcdserverpb\.\w+"')


def parse_setup(text: str) -> tuple[str, str, tuple[int, int, int]]:
    kind, _, profile = text.partition("@")
    system, _, dcs = kind.partition("-")
    if system not in ("raftpg", "patroni") or dcs not in ("raft", "etcd"):
        raise SystemExit(f"--setups: {text!r}: expected (raftpg|patroni)-(raft|etcd)@ttl/loop_wait/retry_timeout")
    ttl, loop_wait, retry = (int(x) for x in (profile or "20/1/4").split("/"))
    return system, dcs, (ttl, loop_wait, retry)


def make_cluster(system: str, base: str, profile: tuple[int, int, int], scope: str,
                 etcd_endpoint: str | None) -> LocalCluster:
    ttl, loop_wait, retry = profile
    cls = PatroniCluster if system == "patroni" else LocalCluster
    section = {"etcd3": {"hosts": [etcd_endpoint]}} if etcd_endpoint else None
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    return cls(base, ["n1", "n2", "n3"], dcs={"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry},
               dcs_section=section, scope=scope)


def create_table(cluster: LocalCluster, primary: str) -> None:
    with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench(v int)")


def member_state(cluster: LocalCluster, asked: str, name: str) -> str | None:
    """``name``'s state in ``asked``'s GET /cluster (Patroni and raftpg answer the same shape)."""
    status, body = cluster.api(asked, "/cluster")
    if status != 200 or not isinstance(body, dict):
        return None
    return next((m.get("state") for m in body.get("members", []) if m.get("name") == name), None)


def switchover_round(cluster: LocalCluster) -> dict[str, Any]:
    primary = settled(cluster)
    candidate = next(n for n in cluster.nodes if n != primary)
    # PostgreSQL streams a moment before the candidate's member key says so (its agent publishes at the end
    # of the cycle that started it); the agents judge eligibility by the member key, so wait for that too
    wait_for(lambda: member_state(cluster, primary, candidate) == "streaming", 30, f"{candidate}'s member key")
    writer = Writer(cluster).start()
    try:
        wait_for(lambda: sum(1 for _, node, _ in list(writer.ok) if node == primary) >= 50, 30, "writes")
        asked = time.monotonic()
        status, body = cluster.api_post(primary, "/switchover", {"leader": primary, "candidate": candidate},
                                        timeout_s=60)
        if status not in (200, 202):
            raise RuntimeError(f"POST /switchover answered {status}: {body}")
        first = wait_for(lambda: writer.first_ok_after(asked, primary), 60, "writes on the new primary")
        time.sleep(0.3)
    finally:
        writer.stop()
    return {"gap_s": writer.gap(primary), "request_to_write_s": first - asked}


def failover_round(cluster: LocalCluster, ttl_s: int) -> dict[str, Any]:
    primary = settled(cluster)
    writer = Writer(cluster).start()
    try:
        wait_for(lambda: sum(1 for _, node, _ in list(writer.ok) if node == primary) >= 50, 30, "writes")
        killed = time.monotonic()
        cluster.kill_node(primary)
        first = wait_for(lambda: writer.first_ok_after(killed, primary), 3 * ttl_s + 60, "writes on a new primary")
        time.sleep(0.3)
    finally:
        writer.stop()
    new_primary = next((node for done, node, _ in writer.ok if done >= first), None)
    lost = lost_rows(cluster, new_primary, writer) if new_primary else None
    # the replica that lost the race, looked at before it follows the new primary: did it hold acknowledged
    # rows the winner lacks (a less advanced replica promoted), or did neither have them (asynchronous
    # replication losing what the killed primary had not sent yet)?
    others = {}
    for node in cluster.nodes:
        if node not in (primary, new_primary):
            try:
                others[node] = lost_rows(cluster, node, writer)
            except psycopg.Error:
                others[node] = None
    cluster.start(primary)
    settled(cluster, timeout_s=240)
    return {"failover_s": first - killed, "lost_rows": lost, "lost_on_other_replicas": others}


def run_setup(system: str, dcs: str, profile: tuple[int, int, int], args: argparse.Namespace) -> dict[str, Any]:
    label = f"{system}-{dcs}@{'/'.join(map(str, profile))}"
    result: dict[str, Any] = {"setup": label, "system": system, "dcs": dcs, "profile": list(profile),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": load_average(),
                              "trials": args.trials}
    etcd = start_etcd() if dcs == "etcd" else None
    if etcd is not None and "footprint" in args.figures:
        time.sleep(5)  # past its start-up work
        _, idle = footprints({}, min(10.0, args.idle_s), extra={"etcd": etcd.pid})
        result["etcd_alone_cpu_pct"] = idle["etcd"]  # its own cost with no client, for reference
    base = tempfile.mkdtemp(prefix=f"cmp-{system}-{dcs}-", dir="/tmp")
    os.chmod(base, 0o755)  # the agents' OS user walks through it
    try:
        result["bootstrap"] = []
        for trial in range(args.trials):
            cluster = make_cluster(system, os.path.join(base, f"t{trial}"), profile, f"cmp{trial}",
                                   etcd.endpoint if etcd else None)
            cluster.write_configs()
            last = trial == args.trials - 1
            try:
                if "bootstrap" in args.figures or last:
                    timing = time_to_bootstrap(cluster, lambda c=cluster: [c.start(n) for n in c.nodes])
                    result["bootstrap"].append(timing)
                    print(f"  {label} bootstrap {trial + 1}: primary {timing['primary_s']:.2f} s, two streaming "
                          f"replicas {timing['streaming_s']:.2f} s", flush=True)
                if last:
                    measure_running(cluster, system, profile, etcd, result, args)
            finally:
                cluster.close(remove=True)
    finally:
        if etcd is not None:
            etcd.cleanup()
        shutil.rmtree(base, ignore_errors=True)  # each trial removed its own directory; this is the parent
        result["load_after"] = load_average()
    return result


def measure_running(cluster: LocalCluster, system: str, profile: tuple[int, int, int], etcd: Any,
                    result: dict[str, Any], args: argparse.Namespace) -> None:
    label = result["setup"]
    primary = settled(cluster)
    create_table(cluster, primary)
    if "footprint" in args.figures:
        time.sleep(args.settle_s)  # after bootstrap: checkpoints, slot creation, first member keys
        roots = {name: cluster.pid(name) for name in cluster.nodes}
        calls_before = etcd_calls(etcd.url) if etcd else None
        started_at = time.monotonic()
        trees, extra = footprints({n: p for n, p in roots.items() if p}, args.idle_s,
                                  extra={"etcd": etcd.pid} if etcd else None)
        if etcd and calls_before is not None:
            elapsed, calls = time.monotonic() - started_at, etcd_calls(etcd.url) - calls_before
            result["etcd_requests_per_s"] = {method: n / elapsed for method, n in sorted(calls.items()) if n}
            print(f"  {label} etcd requests/s: " + ", ".join(
                f"{m} {r:.2f}" for m, r in result["etcd_requests_per_s"].items()), flush=True)
        result["footprint"] = {name: asdict(fp) for name, fp in trees.items()}
        result["etcd_cpu_pct"] = extra.get("etcd")
        for name, fp in trees.items():
            print(f"  {label} idle {name}: RSS {fp.rss_mb:.1f} MB (PSS {fp.pss_mb:.1f}), CPU {fp.cpu_pct:.2f} %, "
                  f"{fp.processes} processes", flush=True)
        if etcd:
            print(f"  {label} etcd CPU {extra['etcd']:.2f} %", flush=True)
    if "latency" in args.figures:
        primary = settled(cluster)
        samples, reconnects = get_latencies_ms(cluster.nodes[primary].api_port, "/primary", args.requests)
        result["latency_ms"] = samples
        result["latency_reconnects"] = reconnects
        print(f"  {label} GET /primary: {len(samples)} requests, {reconnects} reconnections", flush=True)
    if "switchover" in args.figures:
        result["switchover"] = []
        for trial in range(args.trials):
            result["switchover"].append(switchover_round(cluster))
            print(f"  {label} switchover {trial + 1}: gap {result['switchover'][-1]['gap_s']:.3f} s", flush=True)
    if "failover" in args.figures:
        result["failover"] = []
        for trial in range(args.trials):
            result["failover"].append(failover_round(cluster, profile[0]))
            row = result["failover"][-1]
            print(f"  {label} failover {trial + 1}: {row['failover_s']:.2f} s, {row['lost_rows']} rows lost "
                  f"(missing on the other replicas: {row['lost_on_other_replicas']})", flush=True)


def etcd_calls(url: str) -> Counter[str]:
    """The gRPC calls etcd started so far, by method (its JSON gateway turns each request into one; the
    agents' watch streams count once each, when opened)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    calls: Counter[str] = Counter()
    for line in text.splitlines():
        match = _STARTED.match(line)
        if match:
            calls[match.group(1)] += int(float(line.rsplit(" ", 1)[1]))
    return calls


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default=DEFAULT_SETUPS)
    parser.add_argument("--figures", default=",".join(FIGURES))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", default="/tmp/raftpg-compare")
    parser.add_argument("--report", action="store_true", help="only print the tables of what --out holds")
    args = parser.parse_args()
    args.figures = set(args.figures.split(","))
    os.makedirs(args.out, exist_ok=True)
    if not args.report:
        setups = [parse_setup(s) for s in args.setups.split(",") if s]
        if any(system == "patroni" for system, _, _ in setups):
            ensure_patroni()
        if any(dcs == "etcd" for _, dcs, _ in setups) and etcd_binary() is None:
            print("etcd is not installed (Debian package etcd-server)", file=sys.stderr)
            return 2
        for system, dcs, profile in setups:
            result = run_setup(system, dcs, profile, args)
            result["machine"] = machine()
            name = result["setup"].replace("@", "-").replace("/", "-")
            with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as f:
                json.dump(result, f)
    report(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
