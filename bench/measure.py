"""Measurements shared by the side-by-side benches (compare.py, stability.py), for any cluster object with
LocalCluster's interface (``nodes``, ``pid``, ``primary``, ``api``, ``api_post``, ``dsn``, ``kill_node``).

Everything here observes the systems from outside, the same way for raftpg and Patroni: PostgreSQL through
its own views (``pg_stat_replication``), the agents through ``/proc`` and their REST API. Nothing is
asserted; callers print figures.
"""

from __future__ import annotations

import http.client
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# ------------------------------------------------------------------ PostgreSQL seen from outside


class PgWatcher:
    """Which node is a primary and which of the other nodes stream from it, asked of each PostgreSQL
    directly (one connection per node, kept open, re-opened when it breaks).

    A replica counts by its name (both systems set ``application_name`` to the member name): a clone's
    ``pg_basebackup`` streams WAL too and shows up in ``pg_stat_replication`` as "streaming" while the
    replica does not even run yet. Counting those (as this did until 2026-12-05) ended a bootstrap a
    clone's length too early and let a failover trial start before any replica streamed."""

    SQL = ("SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'), "
           "(SELECT array_agg(application_name::text) FROM pg_stat_replication WHERE state = 'streaming')")

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.names = data_nodes(cluster)
        self._conns: dict[str, psycopg.Connection] = {}

    def state(self, name: str) -> tuple[bool, int, list[str]] | None:
        """(in recovery, streaming replicas, their names), or None when the server does not answer."""
        try:
            conn = self._conns.get(name)
            if conn is None or conn.closed or conn.broken:
                conn = psycopg.connect(self.cluster.dsn(name), autocommit=True, connect_timeout=1)
                self._conns[name] = conn
            row = conn.execute(self.SQL).fetchone()
            return (bool(row[0]), int(row[1]), list(row[2] or [])) if row else None
        except psycopg.Error:
            self._drop(name)
            return None

    def primary_with_replicas(self, count: int) -> str | None:
        """The node that is out of recovery with at least ``count`` of the other nodes streaming from it."""
        for name in self.names:
            state = self.state(name)
            if state is not None and not state[0] and len(set(state[2]) & (set(self.names) - {name})) >= count:
                return name
        return None

    def any_primary(self) -> str | None:
        for name in self.names:
            state = self.state(name)
            if state is not None and not state[0]:
                return name
        return None

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        for name in list(self._conns):
            self._drop(name)


def data_nodes(cluster: Any) -> list[str]:
    """The nodes that run PostgreSQL (not witnesses)."""
    return [name for name, spec in cluster.nodes.items() if not getattr(spec, "witness", False)]


def time_to_bootstrap(cluster: Any, start: Callable[[], None], timeout_s: float = 180.0) -> dict[str, float]:
    """Call ``start`` (launch every agent) and time until a primary is out of recovery, and until every
    other data node streams from it (pg_stat_replication, by name: see PgWatcher), polled every 50 ms."""
    watcher = PgWatcher(cluster)
    replicas = len(watcher.names) - 1
    try:
        t0 = time.monotonic()
        start()
        first_primary = None
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if first_primary is None and watcher.any_primary():
                first_primary = time.monotonic() - t0
            if watcher.primary_with_replicas(replicas):
                done = time.monotonic() - t0
                return {"primary_s": first_primary if first_primary is not None else done, "streaming_s": done}
            time.sleep(0.05)
        raise TimeoutError(f"no primary with {replicas} streaming replicas after {timeout_s:g}s")
    finally:
        watcher.close()


def settled(cluster: Any, timeout_s: float = 180.0) -> str:
    """Wait until some node is a primary with every other data node streaming from it; its name."""
    watcher = PgWatcher(cluster)
    try:
        return wait_for(lambda: watcher.primary_with_replicas(len(watcher.names) - 1), timeout_s,
                        "a primary with every replica streaming", interval_s=0.1)
    finally:
        watcher.close()


# ------------------------------------------------------------------ processes, from /proc


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # fields from 3 (state) on


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _is_postgres(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) in ("postgres", "postmaster")
    except OSError:
        return False


def agent_tree(pid: int) -> list[int]:
    """The agent and every process below it except PostgreSQL's (a postgres process and its children)."""
    children, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        if _is_postgres(current):
            continue
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_s(pids: list[int], root: int) -> float:
    """CPU seconds used so far by ``pids``; the root also counts its reaped children (short-lived tools such
    as pg_controldata or psql end up there)."""
    total = 0.0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        used = int(fields[11]) + int(fields[12])  # utime, stime
        if pid == root:
            used += int(fields[13]) + int(fields[14])  # cutime, cstime
        total += used / TICKS_PER_S
    return total


def rss_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) summed over ``pids``, in MB. PSS splits pages shared with other processes (libraries,
    the interpreter) among them; RSS counts them in full for each."""
    rss = pss = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


@dataclass
class Footprint:
    rss_mb: float
    pss_mb: float
    cpu_pct: float
    processes: int


def footprints(roots: dict[str, int], seconds: float, extra: dict[str, int] | None = None,
               sample_s: float = 2.0) -> tuple[dict[str, Footprint], dict[str, float]]:
    """Each agent tree's mean RSS/PSS (sampled every ``sample_s``) and CPU (% of one core) over ``seconds``;
    plus the CPU % of each ``extra`` process (e.g. a shared etcd server, with its own threads)."""
    extra = extra or {}
    trees = {name: agent_tree(pid) for name, pid in roots.items()}
    before = {name: cpu_s(pids, roots[name]) for name, pids in trees.items()}
    extra_before = {name: cpu_s([pid], -1) for name, pid in extra.items()}
    t0 = time.monotonic()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in roots}
    while time.monotonic() - t0 < seconds:
        for name, pid in roots.items():
            trees[name] = agent_tree(pid) or trees[name]  # a short-lived child may come and go
            samples[name].append(rss_mb(trees[name]))
        time.sleep(min(sample_s, max(0.0, seconds - (time.monotonic() - t0))))
    elapsed = time.monotonic() - t0
    result = {}
    for name, pid in roots.items():
        used = cpu_s(agent_tree(pid) or trees[name], pid) - before[name]
        result[name] = Footprint(rss_mb=statistics.mean(s[0] for s in samples[name]),
                                 pss_mb=statistics.mean(s[1] for s in samples[name]),
                                 cpu_pct=100 * used / elapsed, processes=len(trees[name]))
    extra_pct = {name: 100 * (cpu_s([pid], -1) - extra_before[name]) / elapsed for name, pid in extra.items()}
    return result, extra_pct


def load_average() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------ a writing client


@dataclass
class Writer:
    """Inserts rows one after another into whichever node answers ``GET /primary`` with 200, pausing
    ``pause_s`` between inserts. After an error it looks for the primary again at once (every 5 ms), so the
    gaps it records are the systems', not the client's. Every success is kept as (completion, node, value)."""

    cluster: Any
    table: str = "bench"
    pause_s: float = 0.005
    ok: list[tuple[float, str, int]] = field(default_factory=list)
    value: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _find_primary(self) -> str | None:
        for name in self.cluster.nodes:
            if self.cluster.api(name, "/primary", timeout_s=0.5)[0] == 200:
                return name
        return None

    def _run(self) -> None:
        target, conn = None, None
        while not self._stop.is_set():
            if conn is None:
                target = self._find_primary()
                try:
                    conn = psycopg.connect(self.cluster.dsn(target), autocommit=True, connect_timeout=1) \
                        if target else None
                except psycopg.Error:
                    conn = None
                if conn is None:
                    self._stop.wait(0.005)
                    continue
            self.value += 1
            try:
                conn.execute(f"INSERT INTO {self.table}(v) VALUES (%s)", (self.value,))
                self.ok.append((time.monotonic(), target or "", self.value))
                self._stop.wait(self.pause_s)
            except psycopg.Error:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
                conn = None
        if conn is not None:
            conn.close()

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def first_ok_after(self, t: float, not_on: str) -> float | None:
        return next((done for done, node, _ in list(self.ok) if done > t and node != not_on), None)

    def gap(self, old: str) -> float | None:
        """Write unavailability across a change of primary: the first write acknowledged by another node
        minus the last one ``old`` acknowledged before it."""
        ok = list(self.ok)
        first_new = next((i for i, (_, node, _) in enumerate(ok) if node != old), None)
        if first_new is None:
            return None
        last_old = next((ok[i][0] for i in range(first_new - 1, -1, -1) if ok[i][1] == old), None)
        return None if last_old is None else ok[first_new][0] - last_old


def lost_rows(cluster: Any, node: str, writer: Writer, table: str = "bench") -> int:
    """Acknowledged rows missing on ``node`` (asynchronous replication may lose the last few)."""
    with psycopg.connect(cluster.dsn(node), autocommit=True, connect_timeout=2) as conn:
        present = {r[0] for r in conn.execute(f"SELECT v FROM {table}").fetchall()}
    return sum(1 for _, _, v in writer.ok if v not in present)


# ------------------------------------------------------------------ REST latency


def get_latencies_ms(port: int, path: str, count: int) -> tuple[list[float], int]:
    """``count`` back-to-back GETs of ``path`` over one keep-alive HTTP/1.1 connection (reopened when the
    server closes it), as a load balancer's checks do; (latencies in ms, reconnections)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    samples, reconnects = [], 0
    for _ in range(count):
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.will_close:
                conn.close()
                reconnects += 1
        except (OSError, http.client.HTTPException):
            conn.close()
            reconnects += 1
            continue
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return samples, reconnects
