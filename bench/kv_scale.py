"""The limits of the embedded Raft store: how many members, and how its files grow with time.

``members``: a cluster of three PostgreSQL nodes plus 0, 2 or 4 witnesses (3, 5 or 7 Raft voters; a
witness is a full voter without PostgreSQL) at ttl/loop_wait/retry_timeout 5/1/2. For each size: the
idle CPU of every agent over ``--idle-s`` (data nodes, witnesses, the Raft leader's agent, and the whole
cluster's sum), then ``--trials`` unplanned failovers (SIGKILL of the primary's agent and PostgreSQL; a
client inserting every 5 ms into whichever node answers GET /primary; kill to first write on the new one).

``rate``: three Raft voter processes alone (``raftpg.testing.raft_driver``, no HA loop, no PostgreSQL), idle and
then with the log traffic of a three-node cluster's HA loops at loop_wait 1 (7 entries per second: each
node a linearizable read and a member touch, one leader renewal) and twice that: each process's CPU over
``--idle-s``. It separates what pysyncobj costs with nothing to do (its 100 ms tick and 200 ms heartbeats,
encrypted) from what each log entry costs.

``ticks``: the same three voter processes at ``--entries`` log entries a second, each with its tick
thread under cProfile (thread CPU time; ``tick_profile/sitecustomize.py``) for ``--seconds``: where a
tick's time goes on the Raft leader and on a follower, by package and by function.

``growth``: three Raft voters in this process (the store without the HA loop around it) replay what a
three-node cluster asks of it at loop_wait 1, as fast as they can: every simulated second, each of the
three agents reads the scope linearizably (a barrier through the log) and touches its member key, and
the primary renews the leader key: 7 log entries per simulated second. Every simulated 15 minutes: the
entries committed so far, the entries pysyncobj keeps in its log, the journal file's size and allocated
blocks, and the snapshot's size. pysyncobj compacts its log (snapshot, then rewrite the journal with
what is left) when it holds more than 20,000 entries or 300 s of wall time passed: running faster than
real time, this run compacts on the entry count, a real cluster (7 entries/s) every 300 s on the clock,
that is every ~2,100 entries: the journal here is an upper bound of a real one.

    flock /tmp/raftpg-heavy.lock python bench/kv_scale.py members [--sizes 3,5,7] [--trials 3]
    flock /tmp/raftpg-heavy.lock python bench/kv_scale.py rate [--idle-s 30]
    flock /tmp/raftpg-heavy.lock python bench/kv_scale.py ticks [--entries 7] [--seconds 40]
    flock /tmp/raftpg-heavy.lock python bench/kv_scale.py growth [--hours 24]

Prints tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from measure import Writer, footprints, settled, wait_for  # noqa: E402

from raftpg.cli.local_cluster import LocalCluster, free_ports  # noqa: E402
from raftpg.consensus.raft import RaftSettings  # noqa: E402
from raftpg.dcs.keys import KeyLayout  # noqa: E402
from raftpg.dcs.raft import raft_dcs  # noqa: E402
from raftpg.model import Member  # noqa: E402

PROFILE = {"ttl": 5, "loop_wait": 1, "retry_timeout": 2}


# ------------------------------------------------------------------ members


def raft_leader(cluster: LocalCluster) -> str | None:
    by_addr = {spec.raft_addr: name for name, spec in cluster.nodes.items()}
    for name in cluster.nodes:
        status, body = cluster.api(name, "/patroni")
        raft = (body or {}).get("raft") if status == 200 and isinstance(body, dict) else None
        if raft and raft.get("leader") in by_addr:
            return by_addr[raft["leader"]]
    return None


def one_size(voters: int, trials: int, idle_s: float) -> dict[str, Any]:
    witnesses = tuple(f"w{i}" for i in range(1, voters - 2))
    base = tempfile.mkdtemp(prefix=f"kvscale-{voters}-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(os.path.join(base, "c"), ["n1", "n2", "n3", *witnesses], witnesses=witnesses, dcs=PROFILE)
    result: dict[str, Any] = {"voters": voters, "failover_s": []}
    try:
        cluster.start_all()
        primary = settled(cluster)
        with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench(v int)")
        time.sleep(10)
        leader = raft_leader(cluster)
        fps, _ = footprints({n: p for n in cluster.nodes if (p := cluster.pid(n))}, idle_s)
        result["cpu"] = {n: fp.cpu_pct for n, fp in fps.items()}
        result["raft_leader"] = leader
        for trial in range(trials):
            primary = settled(cluster, timeout_s=240)
            writer = Writer(cluster).start()
            try:
                wait_for(lambda p=primary, w=writer: sum(1 for _, n, _ in list(w.ok) if n == p) >= 50, 30, "writes")
                killed = time.monotonic()
                cluster.kill_node(primary)
                first = wait_for(lambda k=killed, p=primary, w=writer: w.first_ok_after(k, p), 120, "a new primary")
            finally:
                writer.stop()
            result["failover_s"].append(first - killed)
            print(f"  {voters} voters, failover {trial + 1}: {first - killed:.2f} s", flush=True)
            cluster.start(primary)
    finally:
        cluster.close(remove=True)
        shutil.rmtree(base, ignore_errors=True)  # the cluster removed its own directory; this is the parent
    return result


def members(args: argparse.Namespace) -> None:
    rows = [one_size(int(n), args.trials, args.idle_s) for n in args.sizes.split(",")]
    print(f"\nRaft voters vs failover time and agents' idle CPU (ttl/loop_wait/retry_timeout 5/1/2, {args.trials} "
          f"failovers each, CPU over {args.idle_s:g} s; % of one core)\n")
    print("| voters | failover median | min-max | CPU per data node | per witness | Raft leader's agent | "
          "whole cluster |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cpu, gaps = r["cpu"], r["failover_s"]
        data = [v for n, v in cpu.items() if n.startswith("n")]
        witness = [v for n, v in cpu.items() if n.startswith("w")]
        leader = r["raft_leader"]
        cells = [f"{r['voters']} (3 data + {r['voters'] - 3} witnesses)",
                 f"{statistics.median(gaps):.2f} s", f"{min(gaps):.2f}-{max(gaps):.2f} s",
                 f"{statistics.median(data):.2f} %", f"{statistics.median(witness):.2f} %" if witness else "-",
                 f"{cpu[leader]:.2f} % ({leader})" if leader in cpu else "-", f"{sum(cpu.values()):.2f} %"]
        print("| " + " | ".join(cells) + " |")


# ------------------------------------------------------------------ rate


def rate(args: argparse.Namespace) -> None:
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
    from raft_helpers import Cluster, Processes

    base, procs = tempfile.mkdtemp(prefix="kvrate-", dir="/tmp"), Processes()
    rows = []
    try:
        cluster = Cluster(base, procs).start()
        cluster.leader()
        for per_second in (0, 7, 14):
            stop = threading.Event()
            threads = [threading.Thread(target=_traffic, args=(node, i, per_second, stop), daemon=True)
                       for i, node in enumerate(cluster.nodes)]
            for t in threads:
                t.start()
            time.sleep(3)
            fps, _ = footprints({n.name: n.proc.pid for n in cluster.nodes}, args.idle_s)
            stop.set()
            for t in threads:
                t.join(10)
            leader = cluster.leader().name
            rows.append((per_second, fps[leader].cpu_pct,
                         statistics.median(fp.cpu_pct for name, fp in fps.items() if name != leader),
                         statistics.median(fp.rss_mb for fp in fps.values())))
    finally:
        procs.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nthree Raft voter processes (raftpg.testing.raft_driver), CPU over {args.idle_s:g} s, % of one core\n")
    print("| log entries per second (cluster) | Raft leader | follower (median) | RSS per process |")
    print("|---|---|---|---|")
    for per_second, leader_cpu, follower_cpu, rss in rows:
        print(f"| {per_second} | {leader_cpu:.2f} % | {follower_cpu:.2f} % | {rss:.0f} MB |")


def _traffic(node: Any, index: int, per_second: int, stop: threading.Event) -> None:
    """This node's share of ``per_second`` entries: per HA cycle a linearizable read (a barrier entry), a
    member touch, and on node 0 a leader renewal; at 14 per second, two cycles per second."""
    if per_second == 0:
        return
    cycles = per_second // 7
    while not stop.is_set():
        started = time.monotonic()
        for _ in range(cycles):
            node.request("GET", "/range?prefix=/service/rate/&linearizable=1")
            node.request("POST", "/put", {"key": f"/service/rate/members/n{index}", "value": "x", "ttl_s": 5})
            if index == 0:
                node.request("POST", "/put", {"key": "/service/rate/leader", "value": "n0", "ttl_s": 5})
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


# ------------------------------------------------------------------ ticks


def ticks(args: argparse.Namespace) -> None:
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
    from raft_helpers import Cluster, Processes

    base, procs = tempfile.mkdtemp(prefix="kvticks-", dir="/tmp"), Processes()
    out = os.path.join(base, "profiles")
    os.makedirs(out)
    hook = {"RAFTPG_TICK_PROFILE_DIR": out, "RAFTPG_TICK_PROFILE_S": str(args.seconds),
            "PYTHONPATH": os.pathsep.join([os.path.join(HERE, "tick_profile"), os.environ.get("PYTHONPATH", "")])}
    saved = {k: os.environ.get(k) for k in hook}
    os.environ.update(hook)  # the driver processes inherit it
    try:
        cluster = Cluster(base, procs).start()
        cluster.leader()
        stop = threading.Event()
        threads = [threading.Thread(target=_traffic, args=(node, i, args.entries, stop), daemon=True)
                   for i, node in enumerate(cluster.nodes)]
        for t in threads:
            t.start()
        pids = {n.name: n.proc.pid for n in cluster.nodes}
        wait_for(lambda: all(os.path.exists(os.path.join(out, f"tick-{p}.prof")) for p in pids.values()),
                 args.seconds + 60, "the tick profiles")
        leader = cluster.leader().name
        stop.set()
        follower = next(name for name in pids if name != leader)
        for role, name in (("Raft leader", leader), ("follower", follower)):
            _print_profile(role, os.path.join(out, f"tick-{pids[name]}.prof"), args.seconds)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        procs.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _package(filename: str) -> str:
    found = re.search(r"site-packages/([^/]+)", filename) or re.search(r"/(raftpg)/", filename)
    if found:
        return found.group(1)
    return "built-ins" if filename == "~" else "standard library"


def _print_profile(role: str, path: str, seconds: float) -> None:
    stats = pstats.Stats(path)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _calls, _prim, own, _cum, _callers in raw.values())
    ticks_seen = sum(calls for (fn, _line, name), (calls, *_rest) in raw.items() if name == "_onTick"
                     and fn.endswith("syncobj.py"))
    by_package: dict[str, float] = {}
    for (filename, _line, _name), (_calls, _prim, own, _cum, _callers) in raw.items():
        by_package[_package(filename)] = by_package.get(_package(filename), 0.0) + own
    print(f"\n{role}: {total:.3f} s of tick-thread CPU under the profiler in ~{seconds:g} s, "
          f"{ticks_seen} ticks ({ticks_seen / seconds:.0f} a second)")
    print("  own time by package: " + ", ".join(f"{name} {100 * own / total:.0f} %" for name, own in
                                                sorted(by_package.items(), key=lambda kv: -kv[1])))
    print("  cumulative, largest (share of the tick thread's time):")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][3])
    for (filename, line, name), (calls, _prim, _own, cum, _callers) in rows[1:16]:
        where = f"{_package(filename)}:{os.path.basename(filename)}:{line}" if filename != "~" else "built-in"
        print(f"    {100 * cum / total:5.1f} %  {calls:7d} calls  {name} ({where})")


# ------------------------------------------------------------------ growth


def files(data_dir: Path) -> tuple[int, int, int]:
    """(journal bytes, journal allocated bytes, snapshot bytes) of one node's raft data dir."""
    journal = allocated = dump = 0
    for path in data_dir.iterdir():
        st = path.stat()
        if path.name.endswith(".journal"):
            journal, allocated = st.st_size, st.st_blocks * 512
        elif path.name.endswith(".dump"):
            dump = st.st_size
    return journal, allocated, dump


def growth(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="kvgrowth-", dir="/tmp"))
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    layout = KeyLayout("/service/", "growth")
    nodes = []
    for i, addr in enumerate(addrs):
        (base / f"n{i}").mkdir()
        settings = RaftSettings(self_addr=addr, partner_addrs=tuple(a for a in addrs if a != addr),
                                data_dir=str(base / f"n{i}"), password="growth-bench-password")
        nodes.append(raft_dcs(settings, layout))
    try:
        wait_for(lambda: _try(lambda: nodes[0].acquire_leader("a0", 5, timeout_s=1.0)), 60, "a leader key")
        members = [Member(f"a{i}", role="replica", state="streaming", lsn=50331648, timeline=1,
                          api_url="http://127.0.0.1:8008/patroni", conn_url="postgres://127.0.0.1:5432/postgres")
                   for i in range(len(nodes))]
        cycles, step = int(args.hours * 3600), 900
        started = time.monotonic()
        print("| simulated time | entries committed | entries kept in the log | journal file (allocated) | "
              "snapshot | wall time |")
        print("|---|---|---|---|---|---|")
        for cycle in range(1, cycles + 1):
            for i, dcs in enumerate(nodes):
                dcs.load(linearizable=True, timeout_s=5)
                dcs.touch_member(members[i], 5, timeout_s=5)
            nodes[0].renew_leader("a0", 5, timeout_s=5)
            if cycle % step == 0 or cycle == cycles:
                status = nodes[0].kv._sync.getStatus()  # type: ignore[attr-defined]
                journal, allocated, dump = max(files(base / f"n{i}") for i in range(3))
                print(f"| {cycle / 3600:.2f} h | {status.get('commit_idx')} | {status.get('log_len')} | "
                      f"{journal / 2**20:.1f} MB ({allocated / 2**20:.1f} MB) | {dump / 1024:.1f} kB | "
                      f"{time.monotonic() - started:.0f} s |", flush=True)
    finally:
        for dcs in nodes:
            dcs.close()
        shutil.rmtree(base, ignore_errors=True)


def _try(call: Any) -> Any:
    try:
        return call()
    except Exception:  # noqa: BLE001 - not ready yet
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("members")
    m.add_argument("--sizes", default="3,5,7")
    m.add_argument("--trials", type=int, default=3)
    m.add_argument("--idle-s", type=float, default=30.0)
    r = sub.add_parser("rate")
    r.add_argument("--idle-s", type=float, default=30.0)
    t = sub.add_parser("ticks")
    t.add_argument("--entries", type=int, default=7, help="log entries a second for the cluster: 0, 7 or 14")
    t.add_argument("--seconds", type=float, default=40.0)
    g = sub.add_parser("growth")
    g.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    {"members": members, "rate": rate, "ticks": ticks, "growth": growth}[args.what](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
