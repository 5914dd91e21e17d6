"""``GET /metrics``: Prometheus text built at scrape time from the node's view.

A collector on a registry of the app's own (no process-global registry: two apps in one process, as in
tests, do not collide). Counters the HA loop keeps (cycles, leader changes) are exported as counters
from its running totals; everything else is a gauge of the last cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from raftpg.api.ports import NodeView
from raftpg.api.status import primary_position
from raftpg.model import NodeStatus

ROLES = ("primary", "replica", "witness", "uninitialized")
LABELS = ["scope", "name"]


def _gauge(name: str, doc: str, labels: list[str], value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=LABELS)
    if value is not None:
        family.add_metric(labels, float(value))
    return family


class NodeCollector(Collector):
    def __init__(self, view: NodeView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view
        status, config = view.status(), view.config()
        labels = [config.scope, config.name]
        local, cluster = status.local, status.view
        info = InfoMetricFamily("raftpg", "raftpg agent", labels=LABELS)
        info.add_metric(labels, {"version": view.version})
        yield info
        role = GaugeMetricFamily("raftpg_role", "1 for this node's current role", labels=[*LABELS, "role"])
        for name in ROLES:
            role.add_metric([*labels, name], 1.0 if str(status.role) == name else 0.0)
        yield role
        yield _gauge("raftpg_primary", "1 when running as primary holding the leader key", labels,
                     1.0 if (local and local.is_primary and status.holds_leader_key) else 0.0)
        yield _gauge("raftpg_postgres_running", "1 when PostgreSQL is running", labels,
                     1.0 if local and local.running else 0.0)
        yield _gauge("raftpg_postgres_timeline", "PostgreSQL timeline", labels, local.timeline if local else None)
        yield _gauge("raftpg_wal_position_bytes", "this node's WAL position", labels, local.lsn if local else None)
        yield _gauge("raftpg_replication_lag_bytes", "bytes behind the best known primary position", labels,
                     _lag(status))
        yield _gauge("raftpg_pending_restart", "1 when a parameter change waits for a restart", labels,
                     1.0 if local and local.pending_restart else 0.0)
        yield _gauge("raftpg_paused", "1 when the cluster is in maintenance mode", labels,
                     1.0 if cluster and cluster.paused else 0.0)
        yield _gauge("raftpg_dcs_last_seen_timestamp_seconds", "wall time of the last successful DCS read",
                     labels, status.dcs_last_seen_wall)
        yield _gauge("raftpg_ha_loop_duration_seconds", "duration of the last HA cycle", labels,
                     status.loop_duration_s)
        yield _counter("raftpg_ha_cycles", "HA cycles completed", labels, status.cycles)
        yield _counter("raftpg_leader_changes", "leader changes this node observed", labels,
                       status.leader_changes)
        yield _gauge("raftpg_leader_lease_remaining_seconds",
                     "seconds until this node must demote (0 unless it holds the leader key)", labels,
                     _lease_remaining(status, view.monotonic()))
        yield from _raft(labels, view.raft_status())


def _counter(name: str, doc: str, labels: list[str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=LABELS)
    family.add_metric(labels, float(value))
    return family


def _lease_remaining(status: NodeStatus, now: float) -> float:
    """The lease the last cycle counted, less the time since; the node demotes at its demotion margin."""
    if not status.holds_leader_key or status.cycle_monotonic is None:
        return 0.0
    return max(0.0, status.cycle_monotonic + status.lease_valid_s - now)


def _lag(status: NodeStatus) -> float | None:
    local = status.local
    if local is None or not local.is_replica or local.lsn is None:
        return 0.0 if local is not None and local.is_primary else None
    reference = primary_position(status.view)
    return None if reference is None else float(max(0, reference - local.lsn))


def _raft(labels: list[str], raft: dict[str, Any] | None) -> Iterator[Metric]:
    if raft is None:
        return
    yield _gauge("raftpg_raft_term", "current Raft term", labels, raft.get("term"))
    yield _gauge("raftpg_raft_commit_index", "Raft commit index", labels, raft.get("commit_index"))
    yield _gauge("raftpg_raft_leader", "1 when this node is the Raft leader", labels,
                 1.0 if raft.get("state") == "leader" else 0.0)
    yield _gauge("raftpg_raft_has_quorum", "1 when this node reaches a Raft quorum", labels,
                 1.0 if raft.get("has_quorum") else 0.0)
    yield _gauge("raftpg_raft_members", "Raft members (voters) this node knows", labels,
                 len(raft.get("members") or ()))


def registry_for(view: NodeView) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    return registry
