"""``raftpg demo``: a local three-node cluster on loopback with the embedded Raft store.

Writes a config per node under ``--dir`` (default ./demo-data) with freshly generated secrets (the Raft
password and one password per PostgreSQL role, kept in ``<dir>/secrets.json``, mode 0600: even a demo
never runs an open Raft port or trusts TCP clients), starts the agents (as the ``postgres`` OS user when
run as root), prints a live table of members whenever it changes, and on Ctrl-C (or
SIGTERM) stops every agent cleanly: the agents stop their PostgreSQL, and the base directory is kept
unless ``--clean``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time

from tabulate import tabulate

from raftpg.cli.local_cluster import LocalCluster


def _rows(cluster: LocalCluster) -> list[list[str]]:
    for name in cluster.nodes:
        status, body = cluster.api(name, "/cluster", timeout_s=1.0)
        if status == 200 and isinstance(body, dict):
            break
    else:
        return [[name, "-", "agent not answering", "", ""] for name in cluster.nodes]
    rows = []
    for member in body.get("members", []):
        lag = member.get("lag")
        lag_text = "" if lag in (None, "") else (f"{lag / 1048576:.1f} MB" if isinstance(lag, int) else str(lag))
        rows.append([member.get("name"), member.get("role"), member.get("state"),
                     member.get("timeline", ""), lag_text])
    seen = {r[0] for r in rows}
    rows += [[n, "-", "not registered", "", ""] for n in cluster.nodes if n not in seen]
    return sorted(rows, key=lambda r: str(r[0]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raftpg demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="demo-data", help="base directory for configs and data")
    parser.add_argument("--nodes", type=int, default=3, help="number of data nodes (default 3)")
    parser.add_argument("--witness", action="store_true", help="make the last node a witness")
    parser.add_argument("--clean", action="store_true", help="remove the base directory on exit")
    parser.add_argument("--duration", type=float, default=0, help="stop by itself after N seconds")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        print("raftpg demo: --nodes must be at least 1", file=sys.stderr)
        return 2
    if os.path.exists(args.dir) and os.listdir(args.dir):
        print(f"raftpg demo: reusing {args.dir} (delete it for a fresh cluster)")
    names = [f"pg{i + 1}" for i in range(args.nodes)]
    witnesses = (names[-1],) if args.witness else ()
    cluster = LocalCluster(args.dir, names, witnesses=witnesses, scope="demo")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster.start_all()
    print(f"started {', '.join(names)} under {os.path.abspath(args.dir)}; logs in <node>/agent.log")
    for name, spec in cluster.nodes.items():
        pg = "witness" if spec.witness else f"postgres port {spec.pg_port}"
        print(f"  {name}: REST {spec.api_url}  raft {spec.raft_addr}  {pg}")
    first = next((spec for spec in cluster.nodes.values() if not spec.witness), None)
    if first is not None:
        print(f"connect: psql 'host=127.0.0.1 port={first.pg_port} user=postgres dbname=postgres' "
              f"(password: \"superuser\" in {os.path.join(os.path.abspath(args.dir), 'secrets.json')})")
    print("press Ctrl-C to stop\n")
    started, last = time.monotonic(), None
    try:
        while not stop.is_set():
            rows = _rows(cluster)
            if rows != last:
                print(time.strftime("%H:%M:%S"))
                print(tabulate(rows, headers=["Member", "Role", "State", "TL", "Lag"], tablefmt="simple"))
                print(flush=True)
                last = rows
            if args.duration and time.monotonic() - started > args.duration:
                break
            for name in names:
                proc = cluster.procs.get(name)
                if proc is not None and proc.poll() not in (None, 0):
                    print(f"{name} exited with status {proc.returncode}; see {cluster.log_path(name)}")
                    cluster.procs.pop(name)
            stop.wait(1.0)
    finally:
        print("stopping the cluster ...", flush=True)
        cluster.close()
        if args.clean:
            shutil.rmtree(args.dir, ignore_errors=True)
        print("stopped")
    return 0
