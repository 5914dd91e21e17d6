"""The JSON documents of the read endpoints, as pure functions of the node's view.

Shapes follow Patroni's (``GET /patroni``, ``/cluster``, ``/history``) so existing tooling reads them;
raftpg adds ``raft``, ``witness``, ``decision`` and ``api_authentication``. WAL positions are integers (bytes), as in Patroni.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from raftpg.api.details import NOTHING, PostgresDetails, patroni_time
from raftpg.config import Config, split_host_port
from raftpg.model import ClusterView, LocalState, Member, NodeStatus, Role, format_lsn


def iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


def in_sync_key(status: NodeStatus) -> bool:
    """A synchronous standby: named in the sync key in synchronous mode (not under quorum commit)."""
    view = status.view
    return bool(view and view.sync and not view.config.quorum_commit and status.name in view.sync.sync_standby)


def in_quorum(status: NodeStatus) -> bool:
    """A quorum standby: a voter of the sync key under quorum commit (Patroni's ``quorum_standby``)."""
    view = status.view
    return bool(view and view.sync and view.config.quorum_commit and status.name in view.sync.sync_standby)


def primary_position(view: ClusterView | None) -> int | None:
    """The best known primary WAL position: the leader's published one or the last recorded optime."""
    if view is None:
        return None
    leader = view.leader_member
    known = [p for p in (view.last_lsn, leader.lsn if leader else None) if p is not None]
    return max(known) if known else None


def commit_mode(local: Any, view: ClusterView | None) -> str:
    """How a running primary's commits are acknowledged, from PostgreSQL's own settings and
    pg_stat_replication: ``off`` (synchronous_mode off), ``sync`` (a synchronous standby confirms them),
    ``async-fallback`` (synchronous_mode on but non-strict with no standby available: committed on the
    primary alone), ``waiting`` (standbys are required but none is synchronous: commits wait, as in
    strict mode with every standby down)."""
    if local.synchronous_standby_names == "":
        return "async-fallback" if view is not None and view.config.synchronous_mode else "off"
    if any(row.sync_state in ("sync", "quorum") for row in local.replication):
        return "sync"
    return "waiting"


def with_fresh(status: NodeStatus, fresh: LocalState | None) -> NodeStatus:
    """The loop's status with PostgreSQL's role, streaming state and positions as observed now (``fresh``),
    so ``GET /patroni`` and the health checks' bodies agree with the health checks' codes. What only a
    full observation reads (timeline, system identifier, pg_stat_replication) stays the loop's.

    Before an agent's first cycle has ended (it may rewind and start PostgreSQL in that cycle) the loop has
    no observation: the probe alone is the body, or a server the checks answer 200 for as a streaming
    replica would be described as stopped and uninitialized. A clone in progress keeps its own status."""
    if fresh is None or status.witness or status.activity is not None:
        return status
    if status.local is None:
        return replace(status, local=fresh) if fresh.running else status
    local = replace(status.local, running=fresh.running, in_recovery=fresh.in_recovery,
                    streaming=fresh.streaming, postmaster_pid=fresh.postmaster_pid,
                    lsn=fresh.lsn if fresh.running else status.local.lsn,
                    receive_lsn=fresh.receive_lsn, replay_lsn=fresh.replay_lsn)
    return replace(status, local=local)


def node_status(status: NodeStatus, config: Config, raft: dict[str, Any] | None, version: str,
                scheduled_restart: dict[str, Any] | None = None, api_authentication: str = "none",
                details: PostgresDetails = NOTHING) -> dict[str, Any]:
    """``GET /patroni``: this node's state. ``api_authentication`` says what guards this API's unsafe
    methods (``none``: anyone who reaches the port may switch over or reconfigure; see ``ApiSettings``).
    ``details``: what only a query tells (start time, pending restart reasons, replay timestamp)."""
    local, view = status.local, status.view
    body: dict[str, Any] = {
        "state": status.state if status.state != "streaming" else "running",
        **({} if status.progress is None else {"progress": status.progress}),
        "role": "standby_leader" if status.standby_leader else str(status.role),
        "witness": status.witness,
        "patroni": {"version": version, "scope": config.scope, "name": config.name},
        "pause": bool(view and view.paused),
        "pending_restart": bool(local and local.pending_restart),
        "tags": config.tags.as_dict(),
        "sync_standby": in_sync_key(status),
        **({"quorum_standby": True} if in_quorum(status) else {}),
        "cluster_unlocked": bool(view is not None and view.leader is None),
        "dcs_last_seen": int(status.dcs_last_seen_wall) if status.dcs_last_seen_wall else None,
        "decision": status.decision,
        "raft": raft,
        "api_authentication": api_authentication,
    }
    if local is not None:
        body.update(_postgres_part(local, view))
        if local.running and details.postmaster_start_time is not None:
            body["postmaster_start_time"] = patroni_time(details.postmaster_start_time)
        if local.is_replica:
            body["xlog"]["replayed_timestamp"] = patroni_time(details.replayed_timestamp)
            body["xlog"]["paused"] = bool(details.replay_paused)
        if details.pending_restart_reason:
            body["pending_restart"] = True
            body["pending_restart_reason"] = details.pending_restart_reason
    if scheduled_restart:
        body["scheduled_restart"] = scheduled_restart
    if status.extra.get("failsafe_mode_is_active"):  # Patroni shows the key only when true
        body["failsafe_mode_is_active"] = True
    if status.error:
        body["error"] = status.error
    if view is not None and view.problems:  # unreadable DCS documents, and what was read instead
        body["dcs_problems"] = list(view.problems)
    return body


def _postgres_part(local: Any, view: ClusterView | None) -> dict[str, Any]:
    part: dict[str, Any] = {
        "server_version": local.server_version,
        "timeline": local.timeline,
        "database_system_identifier": local.sysid,
    }
    if local.is_primary:
        part["xlog"] = {"location": local.lsn}
        part["synchronous_mode"] = commit_mode(local, view)
        part["replication"] = [
            {"application_name": row.application_name, "client_addr": row.client_addr, "state": row.state,
             "sync_state": row.sync_state, "write_lsn": row.write_lsn, "flush_lsn": row.flush_lsn,
             "replay_lsn": row.replay_lsn}
            for row in local.replication
        ]
    elif local.running:
        part["xlog"] = {"received_location": local.receive_lsn, "replayed_location": local.replay_lsn}
        part["replication_state"] = "streaming" if local.streaming else "stopped"
    return part


def _host_port(member: Member) -> tuple[str | None, int | None]:
    hostport = member.host
    if not hostport:
        return None, None
    try:
        return split_host_port(hostport)
    except ValueError:
        return hostport, None


def member_role(view: ClusterView, member: Member) -> str:
    if member.witness:
        return "witness"
    if view.leader and view.leader.name == member.name:
        return "standby_leader" if view.config.standby_cluster and member.role == Role.REPLICA else "leader"
    if view.sync and member.name in view.sync.sync_standby:
        return "quorum_standby" if view.config.quorum_commit else "sync_standby"
    if member.role == Role.UNINITIALIZED:
        return "uninitialized"
    return "replica"


def raft_role(member: Member, raft: dict[str, Any] | None) -> str | None:
    """leader / follower / witness in the embedded Raft as this node sees it (None: no Raft)."""
    if raft is None or not member.raft_addr:
        return None
    if raft.get("leader") == member.raft_addr:
        return "leader"
    return "witness" if member.witness else "follower"


def _positions(member: Member, reference: int | None) -> dict[str, Any]:
    """Patroni's ``receive_lsn``/``receive_lag``, ``replay_lsn``/``replay_lag``, ``lsn``/``lag``: the position
    as text and the bytes behind the best known primary position (``unknown`` when not published)."""
    out: dict[str, Any] = {}
    for prefix, lsn in (("receive_", member.receive_lsn), ("replay_", member.replay_lsn), ("", member.lsn)):
        if lsn is None or reference is None:
            out[f"{prefix}lsn"] = format_lsn(lsn) if lsn is not None else "unknown"
            out[f"{prefix}lag"] = "unknown"
        else:
            out[f"{prefix}lsn"], out[f"{prefix}lag"] = format_lsn(lsn), max(0, reference - lsn)
    return out


def cluster_member(view: ClusterView, member: Member, raft: dict[str, Any] | None) -> dict[str, Any]:
    """One member as Patroni's ``cluster_as_json`` shows it (lsn as text, lags in bytes; none for the leader),
    plus raftpg's ``raft``, ``raft_addr`` and ``version``."""
    host, port = _host_port(member)
    is_leader = bool(view.leader and view.leader.name == member.name)
    entry: dict[str, Any] = {
        "name": member.name, "role": member_role(view, member), "state": member.state,
        "api_url": member.api_url, "host": host, "port": port, "timeline": member.timeline,
        "tags": member.tags.to_dict(), "pending_restart": member.pending_restart,
        "raft": raft_role(member, raft), "raft_addr": member.raft_addr, "version": member.version,
    }
    if member.progress is not None:
        entry["progress"] = member.progress
    if not member.witness and not is_leader:
        entry.update(_positions(member, primary_position(view)))
    return entry


def cluster(view: ClusterView, config: Config, raft: dict[str, Any] | None) -> dict[str, Any]:
    """``GET /cluster``: every member as this node last read them, like patronictl's list."""
    body: dict[str, Any] = {
        "scope": config.scope,
        "system_identifier": view.initialize or None,
        "leader": view.leader.name if view.leader else None,
        "pause": view.paused,
        "members": [cluster_member(view, m, raft) for m in sorted(view.members, key=_order(view))],
    }
    failover = view.failover
    if failover is not None and failover.scheduled_at is not None:
        body["scheduled_switchover"] = {"at": iso(failover.scheduled_at), "from": failover.leader,
                                        "to": failover.candidate}
    elif failover is not None:
        body["failover"] = {"from": failover.leader, "to": failover.candidate}
    return body


def _order(view: ClusterView) -> Any:
    leader = view.leader.name if view.leader else None
    return lambda m: (m.name != leader, m.witness, m.name)


def history(view: ClusterView) -> list[list[Any]]:
    """``GET /history``: [timeline, lsn, reason, ISO time, new leader] per promotion, oldest first."""
    return [[h.timeline, h.lsn, h.reason, iso(h.timestamp) if h.timestamp else None, h.new_leader]
            for h in view.history]
