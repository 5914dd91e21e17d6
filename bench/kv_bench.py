"""Benchmark of the embedded Raft KV on three loopback nodes; prints a table (never asserted in tests).

    /opt/raftpg-venv/bin/python bench/kv_bench.py [--seconds 5] [--failovers 3]

Measures, in one run on this machine:

1. compare-and-set throughput and latency (p50/p99) through the driver's HTTP API, three driver
   processes, clients on the Raft leader's control port: one client, then 8 clients (threads, each
   with its own keep-alive connection and its own key);
2. the same through the Python API of a RaftNode living in this process, made the Raft leader, with
   the two other voters as driver processes (no HTTP, no JSON parsing of requests); then again with
   ``fsync`` on all three (every entry msync'ed before it can be acknowledged);
3. the time from SIGKILL of the Raft leader to the next committed write, seen by a client writing
   in a loop to a surviving node (each attempt with a 0.5 s timeout);
4. pysyncobj's raw figure with the same SyncObjConf: a plain SyncObj with a @replicated counter,
   leader in this process, two peers in helper processes: sequential, 8 threads, and pipelined
   (callbacks, many commands in flight: how pysyncobj's own ~15k/s headline is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from raft_helpers import Cluster, Node, Processes, free_port, wait_until  # noqa: E402

from raftpg.consensus.raft import RaftNode, RaftSettings  # noqa: E402
from raftpg.kv import Committed, Guard  # noqa: E402

# every Raft node runs with a password (DESIGN.md safety rule 9), so every figure includes its encryption
PASSWORD = secrets.token_urlsafe(24)

CLIENTS = 8


# ------------------------------------------------------------------------------------------ measuring


class Run:
    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.errors = 0
        self.seconds = 0.0

    @property
    def ops(self) -> int:
        return len(self.latencies)

    def row(self) -> list[str]:
        lat = sorted(self.latencies)
        if not lat:
            return [self.name, "0", "-", "-", str(self.errors)]
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
        return [self.name, f"{self.ops / self.seconds:,.0f}", f"{p(0.50):.2f}", f"{p(0.99):.2f}",
                str(self.errors)]


def drive(name: str, clients: int, seconds: float, make_op) -> Run:
    """Run ``clients`` threads, each calling its own ``op()`` in a loop for ``seconds``."""
    run = Run(name)
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        op = make_op(i)
        mine: list[float] = []
        errors = 0
        start_line.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                break
            if op():
                mine.append(time.perf_counter() - t0)
            else:
                errors += 1
        with lock:
            run.latencies += mine
            run.errors += errors

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    start_line.wait()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - started
    return run


def http_cas_op(port: int, key: str):
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    state = {"expected": None, "n": 0}

    def op() -> bool:
        state["n"] += 1
        new = f"v{state['n']}"
        body = json.dumps({"key": key, "expected": state["expected"], "new": new, "timeout_s": 5}).encode()
        conn.request("POST", "/cas", body=body, headers={"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        if reply.get("ok"):
            state["expected"] = new
            return True
        return False

    return op


def api_cas_op(node: RaftNode, key: str):
    state = {"expected": None, "n": 0}

    def op() -> bool:
        state["n"] += 1
        new = f"v{state['n']}"
        guard = Guard(exists=False) if state["expected"] is None else Guard(value=state["expected"])
        result = node.put(key, new, guard=guard, timeout_s=5)
        if isinstance(result, Committed):
            state["expected"] = new
            return True
        return False

    return op


# ------------------------------------------------------------------------------------------ scenarios


def bench_http(base: str, procs: Processes, seconds: float) -> list[Run]:
    cluster = Cluster(os.path.join(base, "http"), procs, password=PASSWORD).start()
    leader = cluster.leader()
    runs = [drive("HTTP driver, 1 client", 1, seconds, lambda i: http_cas_op(leader.control_port, "seq")),
            drive(f"HTTP driver, {CLIENTS} clients", CLIENTS, seconds,
                  lambda i: http_cas_op(leader.control_port, f"par/{i}"))]
    follower = next(n for n in cluster.nodes if n is not leader)
    runs.append(drive(f"HTTP driver, {CLIENTS} clients on a follower", CLIENTS, seconds,
                      lambda i: http_cas_op(follower.control_port, f"fol/{i}")))
    for node in cluster.nodes:
        node.stop()
    return runs


def bench_in_process(base: str, procs: Processes, seconds: float, *, fsync: bool = False) -> list[Run]:
    root = os.path.join(base, "inproc-fsync" if fsync else "inproc")
    os.makedirs(root)
    me = f"127.0.0.1:{free_port()}"
    peers = [Node(name=f"p{i}", data_dir=os.path.join(root, f"p{i}"), log_path=os.path.join(root, f"p{i}.log"),
                  procs=procs, password=PASSWORD, extra_args=["--fsync"] if fsync else []) for i in (1, 2)]
    for peer in peers:
        peer.partners = [me] + [p.addr for p in peers if p is not peer]
        peer.start(wait_ready=False)
    node = RaftNode(RaftSettings(self_addr=me, partner_addrs=tuple(p.addr for p in peers),
                                 data_dir=os.path.join(root, "me"), fsync=fsync, password=PASSWORD))
    label = "Python API in process" + (", fsync" if fsync else "")
    try:
        for peer in peers:
            peer.wait_ready()
        wait_until(lambda: node.status().leader is not None, 20, "a leader")
        node.put("warmup", "1", timeout_s=10)
        if node.status().state != "leader":
            leader = next(p for p in peers if p.addr == node.status().leader)
            wait_until(lambda: leader.request("POST", "/transfer", {"addr": me}).ok, 20, "leadership here")
        wait_until(lambda: node.status().state == "leader", 20, "this process to lead")
        return [drive(f"{label}, 1 client", 1, seconds, lambda i: api_cas_op(node, "seq")),
                drive(f"{label}, {CLIENTS} clients", CLIENTS, seconds, lambda i: api_cas_op(node, f"par/{i}"))]
    finally:
        node.close()
        for peer in peers:
            peer.stop()


def bench_failover(base: str, procs: Processes, rounds: int) -> list[float]:
    cluster = Cluster(os.path.join(base, "failover"), procs, password=PASSWORD).start()
    gaps = []
    for r in range(rounds):
        leader = cluster.leader()
        writer = next(n for n in cluster.nodes if n is not leader)
        conn_port = writer.control_port
        assert writer.put("warm", str(r)).ok
        killed_at = time.monotonic()
        os.kill(leader.proc.pid, signal.SIGKILL)
        i = 0
        while True:
            i += 1
            conn = HTTPConnection("127.0.0.1", conn_port, timeout=5)
            try:
                body = json.dumps({"key": "fo", "value": f"{r}-{i}", "timeout_s": 0.5}).encode()
                conn.request("POST", "/put", body=body, headers={"Content-Type": "application/json"})
                if json.loads(conn.getresponse().read()).get("ok"):
                    break
            finally:
                conn.close()
            if time.monotonic() - killed_at > 60:
                raise RuntimeError("no write within 60 s of the leader's death")
        gaps.append(time.monotonic() - killed_at)
        leader.proc.wait(timeout=10)
        leader.start()
        cluster.converged(cluster.nodes)
    for node in cluster.nodes:
        node.stop()
    return gaps


# ------------------------------------------------------------------------------------------ raw pysyncobj


RAW_NODE = r"""
import os
import sys
from pysyncobj import SyncObj, replicated
from raftpg.consensus.raft import RaftNode, RaftSettings

class Counter(SyncObj):
    def __init__(self, me, partners, conf):
        super().__init__(me, partners, conf)
        self.value = 0

    @replicated
    def incr(self):
        self.value += 1
        return self.value

me, partners, data_dir = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
os.makedirs(data_dir, exist_ok=True)
conf = RaftNode._conf(RaftSettings(self_addr=me, partner_addrs=tuple(partners), data_dir=data_dir,
                                   password=os.environ["RAFTPG_BENCH_PASSWORD"]))
counter = Counter(me, partners, conf)
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin (or dies)
counter.destroy()
"""


def bench_raw(base: str, seconds: float) -> list[Run]:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjException, replicated

    class Counter(SyncObj):
        def __init__(self, me, partners, conf):
            super().__init__(me, partners, conf)
            self.value = 0

        @replicated
        def incr(self):
            self.value += 1
            return self.value

    root = os.path.join(base, "raw")
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    helpers = []
    counter = None
    try:
        for i in (1, 2):
            partners = ",".join(a for a in addrs if a != addrs[i])
            helpers.append(subprocess.Popen([sys.executable, "-c", RAW_NODE, addrs[i], partners,
                                             os.path.join(root, f"n{i}")], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE,
                                            env={**os.environ, "RAFTPG_BENCH_PASSWORD": PASSWORD}))
        for helper in helpers:
            assert helper.stdout.readline().strip() == b"ready"
        os.makedirs(os.path.join(root, "n0"))
        conf = RaftNode._conf(RaftSettings(self_addr=addrs[0], partner_addrs=tuple(addrs[1:]),
                                           data_dir=os.path.join(root, "n0"), password=PASSWORD))
        conf.raftMinTimeout, conf.raftMaxTimeout = 0.31, 0.39  # win the first election: no transfer needed
        counter = Counter(addrs[0], addrs[1:], conf)
        wait_until(lambda: counter._getLeader() is not None and counter.incr(sync=True, timeout=5), 30,
                   "a raw leader")
        where = "" if counter._isLeader() else " (leader in another process)"

        def sync_op(i):
            def op() -> bool:
                try:
                    return counter.incr(sync=True, timeout=5) is not None
                except SyncObjException:
                    return False
            return op

        runs = [drive(f"raw pysyncobj, 1 client{where}", 1, seconds, sync_op),
                drive(f"raw pysyncobj, {CLIENTS} clients{where}", CLIENTS, seconds, sync_op)]

        # pipelined: keep up to 1,000 commands in flight, as pysyncobj's own benchmark does
        run = Run(f"raw pysyncobj, pipelined{where}")
        in_flight = threading.Semaphore(1000)
        sent_at: dict[int, float] = {}
        done_lock = threading.Lock()

        def make_callback(n: int):
            def callback(result, error):
                with done_lock:
                    if error == FAIL_REASON.SUCCESS:
                        run.latencies.append(time.perf_counter() - sent_at.pop(n))
                    else:
                        run.errors += 1
                in_flight.release()
            return callback

        started = time.perf_counter()
        n = 0
        while time.perf_counter() - started < seconds:
            in_flight.acquire()
            n += 1
            sent_at[n] = time.perf_counter()
            counter.incr(callback=make_callback(n))
        run.seconds = time.perf_counter() - started
        for _ in range(1000):  # drain what is still in flight
            in_flight.acquire(timeout=10)
        runs.append(run)
        return runs
    finally:
        if counter is not None:
            counter.destroy()
        for helper in helpers:
            helper.stdin.close()
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait(timeout=10)


# ------------------------------------------------------------------------------------------ report


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import pysyncobj.version
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}; Linux "
            f"{platform.release()}; Python {platform.python_version()}; pysyncobj {pysyncobj.version.VERSION}")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="kv-bench-")
    procs = Processes()
    try:
        runs = bench_http(base, procs, args.seconds)
        runs += bench_in_process(base, procs, args.seconds)
        runs += bench_in_process(base, procs, args.seconds, fsync=True)
        runs += bench_raw(base, args.seconds)
        gaps = bench_failover(base, procs, args.failovers)
    finally:
        procs.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"three voters on loopback, journals under {base} (mmap; no fsync unless the row says so), "
          "unbatched appends\n")
    print(table([r.row() for r in runs], ["compare-and-set (raw: increment)", "ops/s", "p50 ms", "p99 ms",
                                          "failed"]))
    print("\nSIGKILL of the Raft leader -> next committed write: "
          + ", ".join(f"{g:.2f}s" for g in gaps) + f" (median {statistics.median(gaps):.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
