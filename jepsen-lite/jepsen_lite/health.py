"""Cluster health as the runner waits for it, and the convergence result (C7-lite).

``healthy``: every node process alive; for raftpg exactly one ``GET /primary`` 200, live witnesses, every
replica streaming (``pg_stat_replication``); for the KV drivers one leader all nodes agree on.
``converge``: after heal + settle, exactly one primary, every replica caught up to the primary's WAL
position, one system identifier; ``CheckResult("convergence", ...)``, invalid when not reached.
"""

from __future__ import annotations

import time

import psycopg

from jepsen_lite.checkers.result import CheckResult
from jepsen_lite.cluster import KvCluster, NodeProcesses, RaftpgCluster

CATCH_UP_S = 60.0


def healthy(cluster: NodeProcesses | None) -> bool:
    if cluster is None or not all(cluster.alive(n) for n in cluster.names):
        return False
    if isinstance(cluster, KvCluster):
        statuses = [cluster.control(n, "GET", "/status", timeout_s=1.0) for n in cluster.names]
        leaders = {b.get("leader") for c, b in statuses if c == 200 and isinstance(b, dict)}
        return len(statuses) == len(cluster.names) and all(c == 200 for c, _ in statuses) \
            and len(leaders) == 1 and None not in leaders
    assert isinstance(cluster, RaftpgCluster)
    primaries = cluster.primaries()
    if len(primaries) != 1:
        return False
    for name in cluster.names:
        if cluster.members[name].witness and cluster.api(name, "GET", "/liveness")[0] != 200:
            return False
    return cluster.streaming(primaries[0]) >= len(cluster.data_names) - 1


def describe(cluster: NodeProcesses | None) -> str:
    if isinstance(cluster, RaftpgCluster):
        return f"primaries={cluster.primaries()} raft_leader={cluster.raft_leader()} " \
               f"alive={[n for n in cluster.names if cluster.alive(n)]}"
    if cluster is not None:
        return f"raft_leader={cluster.raft_leader()} alive={[n for n in cluster.names if cluster.alive(n)]}"
    return "no cluster"


def converge(cluster: NodeProcesses, settled: bool, settle_s: float) -> CheckResult:
    """C7-lite: one primary, every replica caught up to the primary's WAL position, one sysid."""
    if not isinstance(cluster, RaftpgCluster):
        return CheckResult("convergence", settled, {}, () if settled else (
            f"no stable Raft leader within {settle_s:g}s after heal: {describe(cluster)}",))
    primary = cluster.primary() if settled else None
    if primary is None:
        return CheckResult("convergence", False, {},
                           (f"not healthy within {settle_s:g}s after heal: {describe(cluster)}",))
    try:
        with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    except psycopg.Error as exc:
        return CheckResult("convergence", False, {}, (f"primary {primary} unreadable: {exc}",))
    identities: dict[str, tuple[str, int] | None] = {}

    def caught_up(name: str) -> bool:
        try:
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false), "
                    "(SELECT system_identifier FROM pg_control_system()), "
                    "(SELECT timeline_id FROM pg_control_checkpoint())", (str(target),)).fetchone()
        except psycopg.Error:
            return False
        identities[name] = (str(row[2]), row[3])
        return bool(row[0] and row[1]) or name == primary

    start = time.monotonic()
    lagging = [n for n in cluster.data_names if n != primary]
    while lagging and time.monotonic() - start < CATCH_UP_S:
        lagging = [n for n in lagging if not caught_up(n)]
        if lagging:
            time.sleep(0.5)
    caught_up(primary)
    sysids = {i[0] for i in identities.values() if i}
    counts = {"caught_up_s": round(time.monotonic() - start, 2), "nodes": len(cluster.data_names)}
    details: list[str] = []
    if lagging:
        details.append(f"replicas not caught up with {primary} at {target} within {CATCH_UP_S:g}s: {lagging}")
    if len(sysids) > 1:
        details.append(f"several system identifiers after settle: {identities}")
    details.append(f"primary {primary}; identities {identities}")
    return CheckResult("convergence", not lagging and len(sysids) <= 1, counts, tuple(details))
