"""Fencing time, self-demotion on a partition, and the cost of synchronous replication on commits.

1. **agent SIGKILL**: a client bound to the primary's PostgreSQL writes a row every few ms; SIGKILL only
   the agent (the fencing supervisor sees its stdin close) and measure until PostgreSQL refuses writes.
2. **agent SIGSTOP**: the same with the agent frozen; the supervisor fences at its lease deadline, i.e.
   ``lease end - fence_margin`` (raftpg.ha.execute.Timing). SIGCONT afterwards; the node rejoins.
3. **partition** (root and jepsen-lite's namespaces only): cut the primary from both other nodes; its
   agent cannot renew and demotes itself before its lease could expire.
4. **synchronous commit latency**: one client, single-row autocommit INSERTs on the primary, with
   ``synchronous_mode`` on (a synchronous standby confirms each commit) and off, p50/p99.

For 1-3 the table also shows, at the moment PostgreSQL refused writes, the time since the old primary's
last successful lease renewal was *sent* (from its agent's DEBUG log: "action RenewLeaderKey done in
Xs", sent = logged - X); the lease cannot expire anywhere before ``sent + ttl`` (it is counted on the
Raft leader from when it applied the renewal), so "since renewal < ttl" means fenced before any other
node could hold the key. The "refused" time is when the first write attempt after the last
acknowledged one failed (the client's completion time); "last ack" when the last acknowledged write
completed. All times on this machine's monotonic/wall clocks, which every process shares.

    python bench/fencing_bench.py [--rounds 3] [--commits 2000] [--no-partition]

Run as root (agents run as the postgres OS user); on a shared machine under
``flock /tmp/raftpg-heavy.lock``. Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raftpg.cli.local_cluster import LocalCluster  # noqa: E402
from raftpg.ha.execute import Timing  # noqa: E402

TTL_S, LOOP_WAIT_S, RETRY_TIMEOUT_S = 10, 1, 4
DCS = {"ttl": TTL_S, "loop_wait": LOOP_WAIT_S, "retry_timeout": RETRY_TIMEOUT_S}
LOG = {"level": "DEBUG", "format": "%(created).6f %(levelname)s %(name)s: %(message)s"}
RENEWED = re.compile(r"^(\d+\.\d+) DEBUG raftpg\.ha\.execute: action RenewLeaderKey done in (\d+\.\d+)s")


def wall_to_mono(wall: float) -> float:
    """A wall-clock time of this machine as a monotonic reading (both read now; no NTP step assumed)."""
    return time.monotonic() - (time.time() - wall)


def last_renewal_sent(log_path: Path, before_wall: float) -> float | None:
    """Wall time the last successful renewal before ``before_wall`` was sent, from the agent's log."""
    found = None
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                m = RENEWED.match(line)
                if m and float(m.group(1)) <= before_wall:
                    found = float(m.group(1)) - float(m.group(2))
    except OSError:
        return None
    return found


class Writer:
    """A client bound to one PostgreSQL: one INSERT at a time over its own connection, every attempt
    recorded as (invoked, completed, ok) on the monotonic clock."""

    def __init__(self, dsn: str, pause_s: float = 0.005) -> None:
        self.dsn, self.pause_s = dsn, pause_s
        self.attempts: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            invoked = time.monotonic()
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=1)
                    invoked = time.monotonic()
                conn.execute("INSERT INTO fence_bench(v) VALUES (1)")
                self.attempts.append((invoked, time.monotonic(), True))
                self._stop.wait(self.pause_s)
            except psycopg.Error:
                self.attempts.append((invoked, time.monotonic(), False))
                if conn is not None and (conn.closed or conn.broken):
                    conn = None
                self._stop.wait(0.01)
        if conn is not None:
            conn.close()

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def acks(self) -> int:
        return sum(1 for a in list(self.attempts) if a[2])

    def refusal_after(self, fault: float) -> tuple[float | None, float | None]:
        """(last ack completion, first failed attempt's completion after it), after ``fault``."""
        attempts = list(self.attempts)
        last_ok = max((c for i, c, ok in attempts if ok), default=None)
        if last_ok is None:
            return None, None
        refused = next((c for i, c, ok in attempts if not ok and i >= max(fault, last_ok)), None)
        return last_ok, refused


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def query(dsn: str, text: str, params: Any = None) -> list | None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []
    except psycopg.Error:
        return None


def streaming(dsn: str) -> set[str]:
    rows = query(dsn, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
    return {r[0] for r in rows or []}


# ------------------------------------------------------------------ 1 + 2: agent SIGKILL / SIGSTOP


def agent_faults(base: str, rounds: int, results: list[dict[str, Any]]) -> None:
    cluster = LocalCluster(os.path.join(base, "agent"), ["n1", "n2", "n3"], dcs=DCS, extra={"*": {"log": LOG}})
    try:
        cluster.start_all()
        primary = wait_for(cluster.primary, 120, "a primary")
        wait_for(lambda: set(cluster.nodes) - {primary} <= streaming(cluster.dsn(primary)), 120, "replicas")
        query(cluster.dsn(primary), "CREATE TABLE fence_bench(id bigserial PRIMARY KEY, v int)")
        for kind in ("agent SIGKILL", "agent SIGSTOP"):
            for _ in range(rounds):
                results.append(agent_round(cluster, kind))
                print(format_row(results[-1]), flush=True)
    finally:
        cluster.close(remove=True)


def agent_round(cluster: LocalCluster, kind: str) -> dict[str, Any]:
    primary = wait_for(cluster.primary, 120, "a primary")
    wait_for(lambda: set(cluster.nodes) - {primary} <= streaming(cluster.dsn(primary)), 180, "replicas streaming")
    writer = Writer(cluster.dsn(primary)).start()
    try:
        wait_for(lambda: writer.acks() >= 50, 30, "writes")
        fault_wall, fault = time.time(), time.monotonic()
        if kind == "agent SIGKILL":
            cluster.kill(primary)
        else:
            cluster.signal(primary, signal.SIGSTOP)
        wait_for(lambda: writer.refusal_after(fault)[1], 3 * TTL_S, "the old primary to refuse writes")
    finally:
        writer.stop()
    last_ok, refused = writer.refusal_after(fault)
    sent = last_renewal_sent(Path(cluster.log_path(primary)), fault_wall)
    row = {"fault": kind, "to_last_ack": last_ok - fault, "to_refused": refused - fault,
           "since_renewal": None if sent is None else refused - wall_to_mono(sent)}
    new_primary = wait_for(lambda: cluster.primary() if cluster.primary() not in (None, primary) else None, 60,
                           "a new primary")
    row["to_new_primary"] = time.monotonic() - fault  # an upper bound: polled after the refusal
    if kind == "agent SIGSTOP":
        cluster.signal(primary, signal.SIGCONT)
    else:
        cluster.start(primary)
    wait_for(lambda: primary in streaming(cluster.dsn(new_primary)), 180, "the old primary to rejoin")
    return row


# ------------------------------------------------------------------ 3: partition (jepsen-lite namespaces)


def partition_rounds(base: str, rounds: int, results: list[dict[str, Any]]) -> str | None:
    """None when done, else why it was skipped."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "nsenter")):
        return "needs root, ip, nft and nsenter"
    sys.path.insert(0, str(ROOT / "jepsen-lite"))
    try:
        from jepsen_lite.cluster import ClusterOptions, RaftpgCluster
        from jepsen_lite.topology import Cut, Topology
    except ImportError as exc:
        return f"jepsen-lite is not importable: {exc}"

    class DebugCluster(RaftpgCluster):
        def config_for(self, member: Any) -> dict[str, Any]:
            return {**super().config_for(member), "log": LOG}

    topology = Topology(["n1", "n2", "n3"])
    run_dir = Path(tempfile.mkdtemp(prefix="partition-", dir=base))
    cluster = None
    try:
        topology.create()
        cluster = DebugCluster(topology, run_dir, ClusterOptions(nodes=3, ttl_s=TTL_S, loop_wait_s=LOOP_WAIT_S,
                                                                  retry_timeout_s=RETRY_TIMEOUT_S))
        cluster.prepare()
        cluster.start_all()
        primary = wait_for(cluster.primary, 120, "a primary")
        wait_for(lambda: set(cluster.names) - {primary} <= streaming(cluster.dsn(primary)), 120, "replicas")
        query(cluster.dsn(primary), "CREATE TABLE fence_bench(id bigserial PRIMARY KEY, v int)")
        for _ in range(rounds):
            results.append(partition_round(cluster, topology, Cut))
            print(format_row(results[-1]), flush=True)
    finally:
        if cluster is not None:
            cluster.close()
        topology.destroy()
        shutil.rmtree(run_dir, ignore_errors=True)
    return None


def partition_round(cluster: Any, topology: Any, cut: Any) -> dict[str, Any]:
    primary = wait_for(cluster.primary, 120, "a primary")
    others = [n for n in cluster.names if n != primary]
    wait_for(lambda: set(others) <= streaming(cluster.dsn(primary)), 180, "replicas streaming")
    writer = Writer(cluster.dsn(primary, timeout_s=1)).start()
    try:
        wait_for(lambda: writer.acks() >= 50, 30, "writes")
        fault_wall, fault = time.time(), time.monotonic()
        topology.apply([cut(primary, o) for o in others] + [cut(o, primary) for o in others])
        wait_for(lambda: writer.refusal_after(fault)[1], 3 * TTL_S, "the cut-off primary to refuse writes")
    finally:
        writer.stop()
    last_ok, refused = writer.refusal_after(fault)
    sent = last_renewal_sent(cluster.members[primary].log_path, fault_wall)
    row = {"fault": "partition", "to_last_ack": last_ok - fault, "to_refused": refused - fault,
           "since_renewal": None if sent is None else refused - wall_to_mono(sent)}
    new_primary = wait_for(lambda: cluster.primary() if cluster.primary() in others else None, 90,
                           "a new primary on the majority side")
    row["to_new_primary"] = time.monotonic() - fault
    topology.heal()
    wait_for(lambda: primary in streaming(cluster.dsn(new_primary)), 180, "the old primary to rejoin")
    return row


# ------------------------------------------------------------------ 4: synchronous commit latency


def commit_latency(base: str, commits: int) -> dict[str, list[float]]:
    cluster = LocalCluster(os.path.join(base, "sync"), ["n1", "n2", "n3"], dcs={**DCS, "synchronous_mode": True})
    latencies: dict[str, list[float]] = {"sync": [], "async": []}
    try:
        cluster.start_all()
        primary = wait_for(cluster.primary, 120, "a primary")
        dsn = cluster.dsn(primary)
        wait_for(lambda: set(cluster.nodes) - {primary} <= streaming(dsn), 120, "replicas")
        query(dsn, "CREATE TABLE commit_bench(id bigserial PRIMARY KEY, v int)")

        def set_mode(synchronous: bool) -> None:
            code, _ = cluster.api_post(primary, "/config", {"synchronous_mode": synchronous}, method="PATCH")
            if code != 200:
                raise RuntimeError(f"PATCH /config answered {code}")
            wait_for(lambda: (query(dsn, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
                              or [(0,)])[0][0] == (1 if synchronous else 0), 60,
                     f"synchronous_mode {synchronous} to take effect")

        with psycopg.connect(dsn, autocommit=True) as conn:
            for block in range(4):  # alternate, so drift (cache, autovacuum, neighbours) hits both alike
                mode = "sync" if block % 2 == 0 else "async"
                set_mode(mode == "sync")
                for _ in range(commits // 2):
                    started = time.perf_counter()
                    conn.execute("INSERT INTO commit_bench(v) VALUES (1)")
                    latencies[mode].append(time.perf_counter() - started)
    finally:
        cluster.close(remove=True)
    return latencies


# ------------------------------------------------------------------ output


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:7.3f}"


def format_row(row: dict[str, Any]) -> str:
    since = row.get("since_renewal")
    verdict = "-" if since is None else ("yes" if since < TTL_S else "NO")
    return (f"  {row['fault']:<14} {fmt(row['to_last_ack'])} {fmt(row['to_refused'])} {fmt(since)}"
            f"   {verdict:<5} {fmt(row.get('to_new_primary'))}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--no-partition", action="store_true")
    args = parser.parse_args()
    timing = Timing(TTL_S, LOOP_WAIT_S, RETRY_TIMEOUT_S)
    base = tempfile.mkdtemp(prefix="raftpg-fencing-bench-", dir="/tmp")
    os.chmod(base, 0o755)
    print(f"raftpg fencing bench: ttl {TTL_S}s, loop_wait {LOOP_WAIT_S}s, retry_timeout {RETRY_TIMEOUT_S}s; "
          f"fence margin {timing.fence_margin_s:.2f}s (supervisor deadline = lease end - margin), "
          f"demote margin {timing.demote_margin_s:.2f}s; {platform.node()}, {os.cpu_count()} CPUs")
    print("  fault          last ack refused  since renewal  <ttl  new primary   (seconds after the fault)")
    results: list[dict[str, Any]] = []
    skipped = None
    try:
        agent_faults(base, args.rounds, results)
        if not args.no_partition:
            skipped = partition_rounds(base, args.rounds, results)
        latencies = commit_latency(base, args.commits)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print("\nfencing summary (seconds; 'since renewal' = refused - last renewal sent; must be < ttl "
          f"{TTL_S}s)")
    print(f"  {'fault':<14} {'n':>2} {'refused med':>11} {'refused max':>11} {'since renewal max':>17}")
    for kind in ("agent SIGKILL", "agent SIGSTOP", "partition"):
        rows = [r for r in results if r["fault"] == kind]
        if not rows:
            print(f"  {kind:<14}  - skipped: {skipped}" if kind == "partition" and skipped else f"  {kind:<14}  -")
            continue
        refused = [r["to_refused"] for r in rows]
        since = [r["since_renewal"] for r in rows if r["since_renewal"] is not None]
        print(f"  {kind:<14} {len(rows):>2} {statistics.median(refused):>11.3f} {max(refused):>11.3f} "
              f"{(max(since) if since else float('nan')):>17.3f}")
    print("\ncommit latency, one client, single-row autocommit INSERT (ms)")
    print(f"  {'mode':<6} {'n':>6} {'p50':>8} {'p99':>8} {'mean':>8}")
    for mode, values in latencies.items():
        ms = [v * 1000 for v in values]
        print(f"  {mode:<6} {len(ms):>6} {percentile(ms, 0.5):>8.3f} {percentile(ms, 0.99):>8.3f} "
              f"{statistics.fmean(ms):>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
