"""Patroni 4's ``/metrics`` series, by their names, labels (``scope``, ``name``), types and meanings, so
dashboards and alerts written for Patroni keep working against raftpg.

The text is rendered by hand rather than through ``prometheus_client`` because Patroni types some series
``counter`` without the ``_total`` suffix the client library would add (``patroni_xlog_location``): the
names must stay Patroni's. Values describe PostgreSQL as it is now (the caller passes the node's status
with the fresh probe applied, and the details query), as Patroni reads them at scrape time.

``patroni_version`` carries raftpg's own version in Patroni's encoding (``1.2.3`` -> ``010203``).
"""

from __future__ import annotations

from raftpg.api.details import PostgresDetails, epoch_s
from raftpg.api.status import in_quorum, in_sync_key
from raftpg.config import Config
from raftpg.model import NodeStatus

# Patroni's PostgresqlState indexes (patroni_postgres_state), for the states raftpg reports
STATE_INDEX = {"initializing new cluster": 0, "creating replica": 4, "running": 5, "starting": 6,
               "restarting": 9, "stopping": 11, "stopped": 12, "crashed": 14}
STATE_HELP = ("0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, "
              "5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, "
              "11=stopping, 12=stopped, 13=stop_failed, 14=crashed")

# name, type, help: in Patroni's order
SERIES: tuple[tuple[str, str, str], ...] = (
    ("patroni_version", "gauge", "Patroni semver without periods."),
    ("patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise."),
    ("patroni_postmaster_start_time", "gauge", "Epoch seconds since Postgres started."),
    ("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise."),
    ("patroni_xlog_location", "counter",
     "Current location of the Postgres transaction log, 0 if this node is not the leader."),
    ("patroni_standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 otherwise."),
    ("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise."),
    ("patroni_sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise."),
    ("patroni_quorum_standby", "gauge", "Value is 1 if this node is a quorum standby, 0 otherwise."),
    ("patroni_xlog_received_location", "counter",
     "Current location of the received Postgres transaction log, 0 if this node is not a replica."),
    ("patroni_xlog_replayed_location", "counter",
     "Current location of the replayed Postgres transaction log, 0 if this node is not a replica."),
    ("patroni_xlog_replayed_timestamp", "gauge",
     "Current timestamp of the replayed Postgres transaction log, 0 if null."),
    ("patroni_xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise."),
    ("patroni_postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise."),
    ("patroni_postgres_in_archive_recovery", "gauge",
     "Value is 1 if Postgres is replicating from archive, 0 otherwise."),
    ("patroni_postgres_server_version", "gauge", "Version of Postgres (if running), 0 otherwise."),
    ("patroni_cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked."),
    ("patroni_failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 if inactive."),
    ("patroni_postgres_timeline", "gauge", "Postgres timeline of this node (if running), 0 otherwise."),
    ("patroni_dcs_last_seen", "gauge", "Epoch timestamp when DCS was last contacted successfully by Patroni."),
    ("patroni_pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise."),
    ("patroni_is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise."),
    ("patroni_postgres_state", "gauge", "Numeric representation of Postgres state."),
)
NAMES = tuple(name for name, _, _ in SERIES)


def version_number(version: str) -> str:
    """Patroni's encoding: each dotted part zero-padded to two digits (``4.1.5`` -> ``040105``)."""
    parts = [p for p in version.split("+")[0].split("-")[0].split(".") if p.isdigit()]
    return "".join(p.zfill(2) for p in parts) or "0"


def values(node: NodeStatus, version: str, details: PostgresDetails) -> dict[str, float | int | str]:
    local, view = node.local, node.view
    running = bool(local and local.running)
    primary = bool(local and local.is_primary)
    replica = bool(local and local.is_replica)
    streaming = bool(replica and local and local.streaming)
    pending = bool(local and local.pending_restart) or bool(details.pending_restart_reason)
    return {
        "patroni_version": version_number(version),
        "patroni_postgres_running": int(running),
        "patroni_postmaster_start_time": epoch_s(details.postmaster_start_time) if running else 0,
        "patroni_primary": int(primary),
        "patroni_xlog_location": (local.lsn or 0) if primary and local else 0,
        "patroni_standby_leader": int(bool(node.standby_leader and local and local.is_replica)),
        "patroni_replica": int(replica),
        "patroni_sync_standby": int(replica and in_sync_key(node)),
        "patroni_quorum_standby": int(replica and in_quorum(node)),
        "patroni_xlog_received_location": (local.receive_lsn or 0) if replica and local else 0,
        "patroni_xlog_replayed_location": (local.replay_lsn or 0) if replica and local else 0,
        "patroni_xlog_replayed_timestamp": epoch_s(details.replayed_timestamp) if replica else 0,
        "patroni_xlog_paused": int(bool(replica and details.replay_paused)),
        "patroni_postgres_streaming": int(streaming),
        "patroni_postgres_in_archive_recovery": 0,
        "patroni_postgres_server_version": (local.server_version or 0) if running and local else 0,
        "patroni_cluster_unlocked": int(view is None or view.leader is None),
        "patroni_failsafe_mode_is_active": int(bool(node.extra.get("failsafe_mode_is_active"))),
        "patroni_postgres_timeline": (local.timeline or 0) if running and local else 0,
        "patroni_dcs_last_seen": int(node.dcs_last_seen_wall or 0),
        "patroni_pending_restart": int(pending),
        "patroni_is_paused": int(bool(view and view.paused)),
        "patroni_postgres_state": STATE_INDEX.get(node.state if node.state != "streaming" else "running", -1),
    }


def render(node: NodeStatus, config: Config, version: str, details: PostgresDetails) -> str:
    """The exposition text; empty on a witness (Patroni's series describe a PostgreSQL server)."""
    labels = f'{{scope="{_escape(config.scope)}",name="{_escape(config.name)}"}}'
    if node.witness:
        return ""
    current = values(node, version, details)
    lines: list[str] = []
    for name, kind, text in SERIES:
        lines.append(f"# HELP {name} {text}")
        if name == "patroni_postgres_state":
            lines.append(f"# Values: {STATE_HELP}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {current[name]}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
