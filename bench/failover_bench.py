"""Write-unavailability on unplanned failover (and planned switchover), plus the idle agent's footprint.

A client inserts a row every 20 ms into whichever node GET /primary names. For each setting, N times:
SIGKILL the primary's agent and PostgreSQL together, and measure from the kill to the first successful
insert on the new primary. With ``--switchover`` the figure is the write gap as bench/compare.py defines
it (the last insert the old primary acknowledged to the first the new one did; before 2026-12-03 this
script reported the time from the request instead, which includes the old primary's checkpoint while it
still takes writes); the time from the request is printed beside it. Also counts acknowledged rows
missing from the new primary (async replication may lose the last few). Prints a table; nothing is
asserted.

    python bench/failover_bench.py [--runs 5] [--settings 30/10/10,10/1/4,5/1/2] [--switchover]
                                   [--dcs raft,etcd] [--mode async|sync|quorum]

``--dcs raft,etcd`` runs the same measurement on the embedded Raft store and on etcd (Debian's etcd-server
3.4, one member on loopback, started and stopped by PID: it never fails here, so both stores detect a dead
primary the same way, by its leader key's TTL; what differs is the store's path) and prints the ratio of
the medians, etcd/raft.

Run as root (agents run as the postgres OS user) or as a user that may run PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from etcd_fixtures import etcd_binary, start_etcd  # noqa: E402

from raftpg.cli.local_cluster import LocalCluster  # noqa: E402


class Client:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.ok: list[tuple[float, str, int]] = []  # (monotonic completion, node, value)
        self.value = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        target, conn = None, None
        while not self._stop.is_set():
            if conn is None:
                target = self.cluster.primary()
                if target:
                    try:
                        conn = psycopg.connect(self.cluster.dsn(target), autocommit=True, connect_timeout=1)
                    except psycopg.Error:
                        conn = None
            if conn is not None:
                self.value += 1
                try:
                    conn.execute("INSERT INTO bench(v) VALUES (%s)", (self.value,))
                    self.ok.append((time.monotonic(), target, self.value))
                except psycopg.Error:
                    conn.close()
                    conn = None
            self._stop.wait(0.02)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def first_ok_after(self, t: float, not_on: str) -> float | None:
        return next((done for done, node, _ in self.ok if done > t and node != not_on), None)

    def last_ok_before(self, t: float, on: str) -> float | None:
        return next((done for done, node, _ in reversed(self.ok) if done < t and node == on), None)


def agent_footprint(cluster: LocalCluster, name: str, seconds: float = 10.0) -> tuple[float, float]:
    pid = cluster.pid(name)
    if pid is None:
        return float("nan"), float("nan")
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    before, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    used = (cpu() - before) / (time.monotonic() - t0)
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss_kb / 1024, used * 100


MODES = {"async": False, "sync": True, "quorum": "quorum"}  # --mode -> synchronous_mode


def keyed(cluster: LocalCluster, primary: str, mode: str) -> bool:
    """The sync key names the standbys: one synchronous standby, or every other node as a quorum voter."""
    code, body = cluster.api(primary, "/cluster")
    roles = [m.get("role") for m in (body or {}).get("members", [])] if code == 200 and isinstance(body, dict) else []
    if mode == "sync":
        return "sync_standby" in roles
    return roles.count("quorum_standby") == len(cluster.nodes) - 1


def one_setting(ttl: int, loop_wait: int, retry: int, runs: int, switchover: bool,
                dcs_section: dict | None = None, store: str = "raft", mode: str = "async") -> dict:
    base = tempfile.mkdtemp(prefix=f"raftpg-bench-{store}-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(base, ["n1", "n2", "n3"], dcs={"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry,
                                                           "synchronous_mode": MODES[mode]}, dcs_section=dcs_section)
    gaps, lost_total, footprint = [], 0, (float("nan"), float("nan"))
    try:
        cluster.start_all()
        primary = cluster.wait_for(cluster.primary, 120, "a primary")
        with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
            conn.execute("CREATE TABLE bench(v int)")
        time.sleep(max(3, loop_wait * 2))  # let replicas stream; an idle period for the footprint
        footprint = agent_footprint(cluster, primary)
        for run in range(runs):
            primary = cluster.wait_for(cluster.primary, 120, "a primary")
            cluster.wait_for(lambda p=primary: all(cluster.api(n, "/replica")[0] == 200 for n in cluster.nodes
                                                   if n != p), 120, "two streaming replicas")
            if mode != "async":  # a failover needs the sync key to name the standbys again after the last one
                cluster.wait_for(lambda p=primary: keyed(cluster, p, mode), 120, "the standbys in the sync key")
            client = Client(cluster)
            client.start()
            cluster.wait_for(lambda c=client: len(c.ok) > 25, 30, "writes before the fault")
            t0 = time.monotonic()
            if switchover:
                cluster.api_post(primary, "/switchover", {"leader": primary})
            else:
                cluster.kill_node(primary)
            first = cluster.wait_for(lambda c=client, t=t0, p=primary: c.first_ok_after(t, p), 180,
                                     "writes on a new primary")
            time.sleep(0.5)
            client.stop()
            gap = first - t0
            if switchover:
                last_old = client.last_ok_before(first, primary)
                request_s, gap = gap, (first - last_old if last_old is not None else float("nan"))
            new_primary = cluster.primary()
            with psycopg.connect(cluster.dsn(new_primary), autocommit=True) as conn:
                present = {r[0] for r in conn.execute("SELECT v FROM bench").fetchall()}
            lost = sum(1 for _, _, v in client.ok if v not in present)
            lost_total += lost
            gaps.append(gap)
            what = (f"write gap {gap:.3f}s ({request_s:.3f}s from the request)" if switchover
                    else f"{gap:.2f}s to the first write")
            print(f"  {store} ttl {ttl}/{loop_wait}/{retry} run {run + 1}: {what} on {new_primary}, "
                  f"{lost} acknowledged rows lost", flush=True)
            if not switchover:
                cluster.start(primary)
            with psycopg.connect(cluster.dsn(new_primary), autocommit=True) as conn:
                conn.execute("TRUNCATE bench")
    finally:
        cluster.close(remove=os.environ.get("RAFTPG_KEEP") != "1")
    return {"store": store, "setting": f"{ttl}/{loop_wait}/{retry}", "gaps": gaps, "lost": lost_total, "rss_mb": footprint[0],
            "cpu_pct": footprint[1]}


def run_store(store: str, settings: list[str], runs: int, switchover: bool, mode: str) -> list[dict]:
    if store == "raft":
        return [one_setting(*(int(x) for x in s.split("/")), runs, switchover, mode=mode) for s in settings]
    etcd = start_etcd()
    try:
        section = {"etcd3": {"hosts": [etcd.endpoint]}}
        return [one_setting(*(int(x) for x in s.split("/")), runs, switchover, section, store, mode) for s in settings]
    finally:
        etcd.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settings", default="30/10/10,10/1/4,5/1/2")
    parser.add_argument("--switchover", action="store_true", help="planned switchover instead of a kill")
    parser.add_argument("--dcs", default="raft", help="stores to measure, comma-separated: raft, etcd")
    parser.add_argument("--mode", choices=sorted(MODES), default="async",
                        help="replication: asynchronous, synchronous_mode true, or quorum commit")
    args = parser.parse_args()
    stores = args.dcs.split(",")
    if set(stores) - {"raft", "etcd"}:
        parser.error(f"--dcs: unknown store in {args.dcs!r} (raft, etcd)")
    if "etcd" in stores and etcd_binary() is None:
        print("etcd is not installed (Debian package etcd-server)", file=sys.stderr)
        return 2
    results = [r for store in stores
               for r in run_store(store, args.settings.split(","), args.runs, args.switchover, args.mode)]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    kind = "switchover" if args.switchover else "unplanned failover (SIGKILL agent + PostgreSQL)"
    print(f"\n{kind}, {args.mode} replication; {args.runs} runs each; machine: {os.cpu_count()} cores, {cpu}")
    print("| store | ttl/loop_wait/retry | median | min-max | lost rows | idle agent RSS | idle agent CPU |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        gaps = r["gaps"]
        print(f"| {r['store']} | {r['setting']} | {statistics.median(gaps):.2f} s | {min(gaps):.2f}-{max(gaps):.2f} s | "
              f"{r['lost']} | {r['rss_mb']:.0f} MB | {r['cpu_pct']:.2f} % |")
    if len(stores) == 2:
        for setting in args.settings.split(","):
            medians = {r["store"]: statistics.median(r["gaps"]) for r in results if r["setting"] == setting}
            print(f"ratio of medians etcd/raft at {setting}: {medians['etcd'] / medians['raft']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
