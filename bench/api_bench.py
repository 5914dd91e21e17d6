"""Health-check latency: GET /primary on the primary and GET /replica on a replica, idle and while that
node's PostgreSQL restarts. The checks look at PostgreSQL at request time (api/fresh.py: one short query
at most every 0.5 s, shared by concurrent requests), so these figures include that probe.

A keep-alive HTTP/1.1 client (like HAProxy's checks, but back to back) measures p50/p99. Prints a table;
nothing is asserted.

    python bench/api_bench.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from raftpg.cli.local_cluster import LocalCluster  # noqa: E402


def latencies(port: int, count: int, stop: threading.Event | None = None, path: str = "/primary") -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    samples = []
    for _ in range(count):
        if stop is not None and stop.is_set():
            break
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return samples


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="raftpg-apibench-", dir="/tmp")
    os.chmod(base, 0o755)
    cluster = LocalCluster(base, ["n1", "n2", "n3"], dcs={"ttl": 10, "loop_wait": 1, "retry_timeout": 4})
    rows = []
    try:
        cluster.start_all()
        primary = cluster.wait_for(cluster.primary, 120, "a primary")
        cluster.wait_for(lambda: all(cluster.api(n, "/replica")[0] == 200 for n in cluster.nodes if n != primary),
                         120, "replicas")
        replica = next(n for n in cluster.nodes if n != primary)
        for node, path in ((primary, "/primary"), (replica, "/replica")):
            port = cluster.nodes[node].api_port
            latencies(port, 200, path=path)  # warm up
            rows.append((f"GET {path}, idle", latencies(port, args.requests, path=path)))
            during: list[float] = []
            stop = threading.Event()

            def measure(port: int = port, path: str = path, during: list[float] = during,
                        stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    during.extend(latencies(port, 200, stop, path))

            thread = threading.Thread(target=measure)
            thread.start()
            t0 = time.monotonic()
            status, body = cluster.api_post(node, "/restart", {}, timeout_s=120)
            restart_s = time.monotonic() - t0
            stop.set()
            thread.join()
            rows.append((f"GET {path} while its PostgreSQL restarts ({restart_s:.1f}s, HTTP {status})", during))
            cluster.wait_for(lambda node=node, path=path: cluster.api(node, path)[0] == 200, 120, "back in rotation")
    finally:
        cluster.close(remove=True)
    print(f"Health-check latency, keep-alive client on loopback; {os.cpu_count()} cores")
    print("| condition | requests | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, samples in rows:
        print(f"| {name} | {len(samples)} | {statistics.median(samples):.2f} ms | {pct(samples, 0.99):.2f} ms | "
              f"{max(samples):.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
