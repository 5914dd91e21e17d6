"""Safety rule 6 end to end: when the primary's agent dies, freezes or is cut off, its PostgreSQL stops
accepting writes before another node can be promoted, so two primaries never both acknowledge writes.

Real agents, real PostgreSQL, the embedded Raft store. The fencing comes from the supervisor that owns
the postmaster (``raftpg/pg/supervisor.py``): stdin EOF when the agent dies, the lease deadline when it
freezes; and from the HA loop's own demotion when it cannot renew (safety rule 2).

How overlap is checked: a client per node writes one row at a time over its own connection, recording
when each insert was invoked and when it was acknowledged, on the harness's monotonic clock (the clock
of every process on this machine). The old primary's last acknowledged insert must have completed
before the first insert acknowledged by any other node was invoked: an ordering of recorded events,
not a timing threshold. Another client polls ``GET /primary`` on the other nodes and records when one
first answered 200; the old primary must have stopped before that too. Fencing times are printed (the
figures are in bench/fencing_bench.py), never asserted.

The partition test needs network namespaces and nftables (jepsen-lite's ``Topology``), so root; it skips,
saying why, where that is not available.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster_fixtures import sql, try_sql, wait_primary, wait_streaming

from raftpg.testing.poll import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

TTL_S = 10
FAST = {"ttl": TTL_S, "loop_wait": 1, "retry_timeout": 4}
TABLE = "fence_writes"


def now() -> float:
    return time.monotonic()


@dataclass
class Attempt:
    invoked: float
    completed: float
    ok: bool
    error: str = ""


@dataclass
class Hammer:
    """One client bound to one PostgreSQL (never redirected): inserts a row at a time over its own
    connection, reconnecting after an error, and records every attempt."""

    dsn: str
    label: str
    pause_s: float = 0.005
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Hammer:
        self._thread = threading.Thread(target=self._run, name=f"hammer-{self.label}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            invoked = now()
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=1)
                    invoked = now()
                conn.execute(f"INSERT INTO {TABLE}(who) VALUES (%s)", (self.label,))
                self.attempts.append(Attempt(invoked, now(), True))
                self._stop.wait(self.pause_s)
            except psycopg.Error as exc:
                self.attempts.append(Attempt(invoked, now(), False, type(exc).__name__))
                if conn is not None and (conn.broken or conn.closed):
                    conn = None
                self._stop.wait(0.02)
        if conn is not None:
            conn.close()

    @property
    def acks(self) -> list[Attempt]:
        return [a for a in list(self.attempts) if a.ok]

    def last_ack(self) -> Attempt | None:
        acks = self.acks
        return acks[-1] if acks else None

    def first_ack(self, after: float = float("-inf")) -> Attempt | None:
        return next((a for a in self.acks if a.invoked >= after), None)

    def first_failure_after(self, t: float) -> Attempt | None:
        return next((a for a in list(self.attempts) if not a.ok and a.invoked >= t), None)


class PrimaryPoller:
    """Polls GET /primary on the given nodes and records when each first answered 200."""

    def __init__(self, probe: Any, names: list[str]) -> None:
        self.probe, self.names = probe, names
        self.first_200: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="primary-poller", daemon=True)

    def start(self) -> PrimaryPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.names:
                asked = now()
                if self.probe(name) == 200:
                    self.first_200.setdefault(name, asked)
            self._stop.wait(0.05)

    def earliest(self) -> float | None:
        return min(self.first_200.values(), default=None)


def setup_table(cluster: Any, primary: str) -> None:
    sql(cluster, primary, f"CREATE TABLE IF NOT EXISTS {TABLE}(id bigserial PRIMARY KEY, who text)")


def start_cluster(make_cluster: Any) -> tuple[Any, str, list[str]]:
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST)
    cluster.start_all()
    primary = wait_primary(cluster, 90)
    others = sorted(set(cluster.nodes) - {primary})
    wait_streaming(cluster, primary, set(others))
    setup_table(cluster, primary)
    return cluster, primary, others


def assert_no_overlap(old: Hammer, new_hammers: dict[str, Hammer], poller: PrimaryPoller, fault_at: float,
                      what: str) -> tuple[str, Attempt, Attempt]:
    """The old primary's last acknowledged write completed before any other node's first acknowledged
    write was invoked, and before any other node answered GET /primary with 200."""
    last_old = old.last_ack()
    assert last_old is not None, "the old primary never acknowledged a write"
    firsts = {name: h.first_ack() for name, h in new_hammers.items()}
    firsts = {name: a for name, a in firsts.items() if a is not None}
    assert firsts, f"no other node acknowledged a write after {what}"
    new_name, first_new = min(firsts.items(), key=lambda item: item[1].invoked)
    assert last_old.completed < first_new.invoked, (
        f"overlap after {what}: the old primary acknowledged a write completed at +{last_old.completed - fault_at:.3f}s "
        f"but {new_name} had already been sent one at +{first_new.invoked - fault_at:.3f}s")
    seen = poller.earliest()
    assert seen is not None and last_old.completed < seen, \
        f"the old primary still acknowledged writes after GET /primary answered 200 elsewhere ({poller.first_200})"
    return new_name, last_old, first_new


def report(what: str, fault_at: float, old: Hammer, last_old: Attempt, first_new: Attempt, new_name: str,
           poller: PrimaryPoller) -> None:
    refused = old.first_failure_after(fault_at)
    print(f"\n{what}: last ack on the old primary +{last_old.completed - fault_at:.3f}s, "
          f"first refusal +{(refused.completed - fault_at) if refused else float('nan'):.3f}s, "
          f"GET /primary 200 on {sorted(poller.first_200)} at +{(poller.earliest() or fault_at) - fault_at:.3f}s, "
          f"first ack on {new_name} invoked +{first_new.invoked - fault_at:.3f}s (ttl {TTL_S}s)")


def test_sigkill_of_the_primarys_agent_fences_postgres_before_another_node_is_promoted(make_cluster):
    cluster, primary, others = start_cluster(make_cluster)
    old = Hammer(cluster.dsn(primary), primary).start()
    news = {name: Hammer(cluster.dsn(name), name).start() for name in others}
    poller = PrimaryPoller(lambda n: cluster.api(n, "/primary", timeout_s=1.0)[0], others).start()
    try:
        wait_until(lambda: len(old.acks) >= 20, 30, "writes acknowledged by the primary")
        killed_at = now()
        cluster.kill(primary)  # the agent only: PostgreSQL is left to the fencing supervisor
        wait_until(lambda: any(h.first_ack() for h in news.values()), 60, "a write acknowledged by a new primary")
        wait_until(poller.earliest, 30, "GET /primary 200 on another node")
        wait_until(lambda: cluster.postmaster_pid(primary) is None, 10, "the old postmaster to be gone")
        wait_until(lambda: old.first_failure_after(killed_at), 10, "the old primary to refuse a write")
    finally:
        for hammer in (old, *news.values()):
            hammer.stop()
        poller.stop()
    new_name, last_old, first_new = assert_no_overlap(old, news, poller, killed_at, "SIGKILL of the agent")
    report("agent SIGKILL", killed_at, old, last_old, first_new, new_name, poller)
    assert cluster.pid(primary) is None
    assert try_sql(cluster, primary, "SELECT 1") is None  # and it stays refused: nothing restarts it
    assert sql(cluster, new_name, "SELECT pg_is_in_recovery()")[0][0] is False


def test_sigstop_of_the_primarys_agent_fences_postgres_and_it_rejoins_as_a_replica(make_cluster):
    cluster, primary, others = start_cluster(make_cluster)
    old = Hammer(cluster.dsn(primary), primary).start()
    news = {name: Hammer(cluster.dsn(name), name).start() for name in others}
    poller = PrimaryPoller(lambda n: cluster.api(n, "/primary", timeout_s=1.0)[0], others).start()
    old_postmaster = cluster.postmaster_pid(primary)
    continued_at = None
    after_cont: list[str] = []
    try:
        wait_until(lambda: len(old.acks) >= 20, 30, "writes acknowledged by the primary")
        stopped_at = now()
        cluster.signal(primary, signal.SIGSTOP)
        try:
            # while the agent is frozen: its postmaster is fenced and another node takes over
            wait_until(lambda: cluster.postmaster_pid(primary) is None, 3 * TTL_S,
                       "the frozen agent's postmaster to be fenced")
            fenced_seen_at = now()
            wait_until(lambda: any(h.first_ack() for h in news.values()), 60, "a write acknowledged by a new primary")
            new_primary = wait_primary(cluster, 30, exclude=primary)
            wait_until(poller.earliest, 30, "the poller to see GET /primary 200 on another node")
            # hold the freeze for 2 x ttl in all, or longer if the failover took longer on a loaded machine
            # (the fault's length, not a synchronisation)
            while now() < stopped_at + 2 * TTL_S:
                time.sleep(0.1)
            assert cluster.postmaster_pid(primary) is None  # still fenced: nothing restarted it
        finally:
            continued_at = now()
            cluster.signal(primary, signal.SIGCONT)
        # after SIGCONT the old node must come back as a replica, never answer as a primary
        old_probe = threading.Event()

        def watch_old() -> None:
            while not old_probe.is_set():
                if cluster.api(primary, "/primary", timeout_s=1.0)[0] == 200:
                    after_cont.append(f"GET /primary answered 200 at +{now() - continued_at:.2f}s")
                old_probe.wait(0.1)

        watcher = threading.Thread(target=watch_old, daemon=True)
        watcher.start()
        try:
            wait_streaming(cluster, new_primary, {primary}, timeout_s=120)
            wait_until(lambda: try_sql(cluster, primary, "SELECT pg_is_in_recovery()") == [(True,)], 30,
                       "the old primary to answer as a replica")
            wait_until(lambda: cluster.api(primary, "/replica")[0] == 200, 30, "GET /replica 200 on the old primary")
        finally:
            old_probe.set()
            watcher.join(5)
    finally:
        for hammer in (old, *news.values()):
            hammer.stop()
        poller.stop()
    new_name, last_old, first_new = assert_no_overlap(old, news, poller, stopped_at, "SIGSTOP of the agent")
    report("agent SIGSTOP", stopped_at, old, last_old, first_new, new_name, poller)
    print(f"postmaster {old_postmaster} seen fenced at +{fenced_seen_at - stopped_at:.3f}s")
    assert new_name == new_primary
    assert last_old.completed < fenced_seen_at
    acked_after_cont = [a for a in old.acks if a.invoked >= continued_at]
    assert not acked_after_cont, f"the old primary acknowledged {len(acked_after_cont)} writes after SIGCONT"
    assert not after_cont, after_cont
    assert cluster.primary() == new_primary
    assert sql(cluster, primary, "SELECT pg_is_in_recovery()")[0][0] is True


# ------------------------------------------------------------------ network partition (jepsen-lite)

JEPSEN_LITE = Path(__file__).resolve().parents[2] / "jepsen-lite"


def _jepsen_lite() -> tuple[Any, Any]:
    """(topology module, cluster module) of jepsen-lite, or skip saying why they cannot be used."""
    if os.geteuid() != 0:
        pytest.skip("the partition test needs root (network namespaces and nftables via jepsen-lite)")
    for tool in ("ip", "nft", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"the partition test needs {tool} (jepsen-lite's Topology)")
    sys.path.insert(0, str(JEPSEN_LITE))
    try:
        from jepsen_lite import cluster as jl_cluster
        from jepsen_lite import topology as jl_topology
    except ImportError as exc:
        pytest.skip(f"jepsen-lite's topology/cluster modules are not importable: {exc}")
    finally:
        sys.path.remove(str(JEPSEN_LITE))
    return jl_topology, jl_cluster


def test_a_primary_cut_off_from_the_majority_stops_writes_before_its_lease_expires(need_root_netns):
    jl_topology, jl_cluster = need_root_netns
    run_dir = Path(tempfile.mkdtemp(prefix="raftpg-partition-", dir="/tmp"))
    topology = jl_topology.Topology(["n1", "n2", "n3"])
    cluster = None
    passed = False
    try:
        try:
            topology.create()
        except Exception as exc:  # noqa: BLE001 - an environment without netns support
            pytest.skip(f"cannot create network namespaces here: {exc}")
        cluster = jl_cluster.RaftpgCluster(topology, run_dir, jl_cluster.ClusterOptions(
            nodes=3, ttl_s=TTL_S, loop_wait_s=1, retry_timeout_s=4))
        cluster.prepare()
        cluster.start_all()
        primary = wait_until(cluster.primary, 120, "a primary")
        others = [n for n in cluster.names if n != primary]

        def streaming() -> set[str]:
            rows = _try(cluster.dsn(primary), "SELECT application_name FROM pg_stat_replication "
                                              "WHERE state = 'streaming'")
            return {r[0] for r in rows or []}

        wait_until(lambda: set(others) <= streaming(), 120, "both replicas streaming")
        with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE}(id bigserial PRIMARY KEY, who text)")
        old = Hammer(cluster.dsn(primary, timeout_s=1), primary).start()
        news = {n: Hammer(cluster.dsn(n, timeout_s=1), n).start() for n in others}
        poller = PrimaryPoller(lambda n: cluster.api(n, "GET", "/primary", timeout_s=1.0)[0], others).start()
        key_moved: dict[str, float] = {}
        stop_keys = threading.Event()

        def watch_leader_key() -> None:  # when the majority side first saw the old primary's key gone
            while not stop_keys.is_set():
                for n in others:
                    asked = now()
                    code, body = cluster.api(n, "GET", "/cluster", timeout_s=1.0)
                    if code == 200 and isinstance(body, dict) and body.get("leader") != primary:
                        key_moved.setdefault(n, asked)
                stop_keys.wait(0.05)

        keys_thread = threading.Thread(target=watch_leader_key, daemon=True)
        keys_thread.start()
        try:
            wait_until(lambda: len(old.acks) >= 20, 30, "writes acknowledged by the primary")
            cut_at = now()
            topology.apply(jl_topology.Cut(a, b) for a, b in
                           [(primary, o) for o in others] + [(o, primary) for o in others])
            wait_until(lambda: old.first_failure_after(cut_at), 3 * TTL_S, "the cut-off primary to refuse writes")
            wait_until(lambda: any(h.first_ack() for h in news.values()), 90, "a write acknowledged by a new primary")
            new_primary = wait_until(lambda: cluster.primary() if cluster.primary() in others else None, 30,
                                     "one primary on the majority side")
            wait_until(poller.earliest, 30, "the poller to see GET /primary 200 on the majority side")
            healed_at = now()
            topology.heal()
            wait_until(lambda: try_dsn_bool(cluster.dsn(primary), "SELECT pg_is_in_recovery()"), 120,
                       "the old primary to come back as a replica")
            wait_until(lambda: primary in {r[0] for r in _try(cluster.dsn(new_primary),
                       "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'") or []},
                       120, "the old primary streaming from the new one")
            assert cluster.primaries() == [new_primary]
        finally:
            stop_keys.set()
            keys_thread.join(5)
            for hammer in (old, *news.values()):
                hammer.stop()
            poller.stop()
        new_name, last_old, first_new = assert_no_overlap(old, news, poller, cut_at, "the partition")
        report("partition of the primary", cut_at, old, last_old, first_new, new_name, poller)
        moved = min(key_moved.values(), default=None)
        assert moved is not None, "the majority never saw the leader key leave the old primary"
        assert last_old.completed < moved, "the old primary acknowledged writes after its leader key was gone"
        print(f"leader key seen gone on the majority side at +{moved - cut_at:.3f}s; "
              f"the old primary's last ack +{last_old.completed - cut_at:.3f}s after the cut")
        assert new_name == new_primary
        rejoined = [a for a in old.acks if a.invoked >= healed_at]
        assert not rejoined, f"the old primary acknowledged {len(rejoined)} writes after the heal"
        passed = True
    finally:
        if cluster is not None:
            cluster.close()
        topology.destroy()
        if passed and os.environ.get("RAFTPG_KEEP") != "1":
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"partition run directory kept: {run_dir}")


@pytest.fixture
def need_root_netns() -> tuple[Any, Any]:
    if not os.path.isdir("/usr/lib/postgresql"):
        pytest.skip("PostgreSQL server binaries are not installed")
    return _jepsen_lite()


def _try(dsn: str, query: str) -> list | None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            return conn.execute(query).fetchall()
    except psycopg.Error:
        return None


def try_dsn_bool(dsn: str, query: str) -> bool:
    rows = _try(dsn, query)
    return bool(rows and rows[0][0] is True)
