"""Leader changes nobody asked for, by ttl and load: is a short lease worth having on a busy machine?

A three-node raftpg cluster (embedded Raft) runs at each profile (ttl/loop_wait/retry_timeout 4/1/1, 5/1/2,
10/1/4, 20/1/4; raftpg refuses a ttl under 4) through load phases of ``--minutes`` each, and nobody asks for a switchover:
- ``cpu``: a busy-looping process per core (the agents compete with them for every core);
- ``fsync``: a writer that appends 64 KiB and fsyncs, back to back, on the data directories' filesystem;
- ``pause``: every 20 s, each agent is stopped (SIGSTOP) at a random moment for 200-500 ms, then continued
  (the agent only: its fencing supervisor and PostgreSQL keep running, as after a long GC pause or a stall);
- ``pgbench``: ``pgbench -c 4 -j 2 -R 100`` (TPC-B-like, 100 transactions/s) on whichever node is primary;
- ``all``: the four together.
Counted per phase: changes of the node that answers ``GET /primary`` (polled every 0.2 s), promotions
(the primary's timeline at the end minus at the start), and for each change the agents' log lines around
it that say why (warnings, errors, lease and fencing lines). Prints a table of changes per phase and per
hour; results go to ``--out`` as JSON per ttl. Nothing is asserted.

    flock /tmp/raftpg-heavy.lock python bench/stability.py [--ttls 4,5,10,20] [--loads cpu,fsync,pause,pgbench,all]
        [--minutes 3] [--out /tmp/raftpg-stability] [--report]

Runs the agents as the postgres OS user when root. Each ttl takes about ``len(loads) * minutes`` plus a
minute: run one or two ttls per turn of the shared heavy lock.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from typing import Any

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from measure import load_average, settled  # noqa: E402

from raftpg.cli.local_cluster import LocalCluster  # noqa: E402

PROFILES = {4: (4, 1, 1), 5: (5, 1, 2), 10: (10, 1, 4), 20: (20, 1, 4)}
LOADS = ("cpu", "fsync", "pause", "pgbench", "all")
PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
WHY = re.compile(r"WARNING|ERROR|CRITICAL|FATAL|lease|fenc|FENC|demot|promot|lost|expired|took|slow", re.I)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.](\d{3})")


# ------------------------------------------------------------------ loads


class Load:
    """Start and stop one kind of pressure; every process it starts is stopped by its PID."""

    def __init__(self, cluster: LocalCluster, base: str) -> None:
        self.cluster, self.base = cluster, base
        self.procs: list[subprocess.Popen] = []
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def spawn(self, argv: list[str], **kwargs: Any) -> None:
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, **kwargs))

    def thread(self, target: Any) -> None:
        t = threading.Thread(target=target, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def start_cpu(load: Load) -> None:
    for _ in range(os.cpu_count() or 1):
        load.spawn([sys.executable, "-c", "while True:\n    pass"])


def start_fsync(load: Load) -> None:
    path = os.path.join(load.base, "fsync-writer.dat")
    code = ("import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT,0o600)\nblock=os.urandom(65536)\n"
            "while True:\n    os.lseek(fd,0,0)\n    for _ in range(1024):\n        os.write(fd,block)\n"
            "        os.fsync(fd)\n")
    load.spawn([sys.executable, "-c", code, path])


def start_pause(load: Load) -> None:
    """Every 20 s window, each agent is stopped once, at a random moment, for 200-500 ms."""
    rng = random.Random(20)

    def run() -> None:
        while not load.stop_event.is_set():
            window = time.monotonic()
            plan = sorted((rng.uniform(0, 19.5), rng.uniform(0.2, 0.5), name) for name in load.cluster.nodes)
            for offset, length, name in plan:
                if load.stop_event.wait(max(0.0, window + offset - time.monotonic())):
                    return
                pid = load.cluster.pid(name)
                if pid is None:
                    continue
                try:
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(length)
                finally:
                    os.kill(pid, signal.SIGCONT)
            load.stop_event.wait(max(0.0, window + 20 - time.monotonic()))

    load.thread(run)


def start_pgbench(load: Load) -> None:
    def run() -> None:
        while not load.stop_event.is_set():
            primary = load.cluster.primary()
            if primary is None:
                load.stop_event.wait(0.5)
                continue
            env = {**os.environ, "PGPASSWORD": load.cluster.pg_passwords["superuser"]}
            argv = [PGBENCH, "-h", "127.0.0.1", "-p", str(load.cluster.nodes[primary].pg_port), "-U", "postgres",
                    "-n", "-c", "4", "-j", "2", "-R", "100", "-T", "30", "postgres"]
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            while proc.poll() is None and not load.stop_event.wait(0.2):
                pass
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    load.thread(run)


STARTERS = {"cpu": (start_cpu,), "fsync": (start_fsync,), "pause": (start_pause,), "pgbench": (start_pgbench,),
            "all": (start_cpu, start_fsync, start_pause, start_pgbench)}


# ------------------------------------------------------------------ what happened


class LeaderMonitor:
    """Polls every node's GET /primary every 0.2 s, each node on its own thread (a stopped agent does not
    hold the others up); keeps (wall time, node) for every 200."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.samples: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(name,), daemon=True) for name in cluster.nodes]

    def _poll(self, name: str) -> None:
        while not self._stop.wait(0.2):
            if self.cluster.api(name, "/primary", timeout_s=0.5)[0] == 200:
                with self._lock:
                    self.samples.append((time.time(), name))

    def start(self) -> LeaderMonitor:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def changes(self) -> list[tuple[float, str, str]]:
        """(wall time, old, new) each time another node than the last one answered as primary."""
        found, last = [], None
        for when, name in sorted(self.samples):
            if last is not None and name != last:
                found.append((when, last, name))
            last = name
        return found


def timeline(cluster: LocalCluster) -> int | None:
    primary = cluster.primary()
    if primary is None:
        return None
    try:
        with psycopg.connect(cluster.dsn(primary), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        return int(row[0][:8], 16) if row else None
    except psycopg.Error:
        return None


def why(cluster: LocalCluster, when: float, ttl_s: int) -> list[str]:
    """Lines of every agent's log from ``ttl + 2`` s before ``when`` to 1 s after that say why."""
    lines = []
    for name in cluster.nodes:
        try:
            with open(cluster.log_path(name), errors="replace") as f:
                for line in f:
                    m = LOG_TIME.match(line)
                    if not m or not WHY.search(line):
                        continue
                    t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
                    if when - ttl_s - 2 <= t <= when + 1:
                        lines.append(f"{name}: {line.strip()[:220]}")
        except OSError:
            continue
    return lines[-40:]


# ------------------------------------------------------------------ one ttl


def settled_or_show(cluster: LocalCluster, timeout_s: float = 180.0) -> str:
    """``settled``, or the end of every agent's log before the TimeoutError (a cluster that never formed)."""
    try:
        return settled(cluster, timeout_s)
    except TimeoutError:
        for name in cluster.nodes:
            print(f"--- {cluster.log_path(name)}", file=sys.stderr)
            with open(cluster.log_path(name), errors="replace") as f:
                print("".join(f.readlines()[-15:]), file=sys.stderr)
        raise


def run_ttl(ttl: int, loads: list[str], minutes: float) -> dict[str, Any]:
    profile = PROFILES[ttl]
    base = tempfile.mkdtemp(prefix=f"stab-{ttl}-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(os.path.join(base, "c"), ["n1", "n2", "n3"],
                           dcs=dict(zip(("ttl", "loop_wait", "retry_timeout"), profile, strict=True)))
    result: dict[str, Any] = {"ttl": ttl, "profile": list(profile), "minutes": minutes, "phases": {},
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        cluster.start_all()
        primary = settled_or_show(cluster)
        env = {**os.environ, "PGPASSWORD": cluster.pg_passwords["superuser"]}
        subprocess.run([PGBENCH, "-i", "-q", "-s", "5", "-h", "127.0.0.1", "-p", str(cluster.nodes[primary].pg_port),
                        "-U", "postgres", "postgres"], env=env, check=True, capture_output=True)
        for kind in loads:
            settled_or_show(cluster, timeout_s=300)
            result["phases"][kind] = run_phase(cluster, base, kind, minutes, ttl)
            phase = result["phases"][kind]
            print(f"  ttl {ttl} {kind}: {len(phase['changes'])} leader changes, {phase['promotions']} promotions "
                  f"in {phase['minutes']:.1f} min (load {phase['load']:.1f})", flush=True)
            for change in phase["changes"]:
                print(f"    {change['at']}: {change['old']} -> {change['new']}", flush=True)
                for line in change["why"][-12:]:
                    print(f"      {line}", flush=True)
    finally:
        cluster.close(remove=True)
        shutil.rmtree(base, ignore_errors=True)
    return result


def run_phase(cluster: LocalCluster, base: str, kind: str, minutes: float, ttl: int) -> dict[str, Any]:
    before = timeline(cluster)
    monitor = LeaderMonitor(cluster).start()
    load = Load(cluster, base)
    started = time.monotonic()
    try:
        for start in STARTERS[kind]:
            start(load)
        time.sleep(minutes * 60)
    finally:
        load.stop()
        monitor.stop()
    elapsed = (time.monotonic() - started) / 60
    settled(cluster, timeout_s=300)
    after = timeline(cluster)
    changes = [{"at": datetime.fromtimestamp(when).strftime("%H:%M:%S.%f")[:-3], "old": old, "new": new,
                "why": why(cluster, when, ttl)} for when, old, new in monitor.changes()]
    return {"minutes": elapsed, "changes": changes, "load": load_average(),
            "promotions": (after - before) if after is not None and before is not None else None}


# ------------------------------------------------------------------ report


def report(directory: str) -> None:
    results = sorted((json.load(open(p)) for p in glob.glob(os.path.join(directory, "ttl-*.json"))),
                     key=lambda r: r["ttl"])
    if not results:
        print(f"no results in {directory}")
        return
    loads = [k for k in LOADS if any(k in r["phases"] for r in results)]
    print(f"\nleader changes nobody asked for: count in the phase (per hour); {results[0]['minutes']:g} min per "
          f"cell; measured {', '.join(sorted({r['started'][:10] for r in results}))}\n")
    print("| ttl/loop_wait/retry | " + " | ".join(loads) + " |")
    print("|---|" + "---|" * len(loads))
    for r in results:
        cells = []
        for kind in loads:
            phase = r["phases"].get(kind)
            if phase is None:
                cells.append("-")
                continue
            n = len(phase["changes"])
            cells.append(f"{n} ({n * 60 / phase['minutes']:.0f}/h)")
        print(f"| {'/'.join(map(str, r['profile']))} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttls", default="4,5,10,20")
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--out", default="/tmp/raftpg-stability")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not args.report:
        loads = [k for k in args.loads.split(",") if k]
        for ttl in (int(t) for t in args.ttls.split(",")):
            result = run_ttl(ttl, loads, args.minutes)
            with open(os.path.join(args.out, f"ttl-{ttl}.json"), "w", encoding="utf-8") as f:
                json.dump(result, f)
    report(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
