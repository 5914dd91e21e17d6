"""Stored documents <-> the ClusterView snapshot. Parsing lives here, at the edge.

Every backend stores the same documents (JSON, Patroni-compatible where Patroni has a shape):
``leader`` is the holder's name; ``initialize`` the system identifier ("" while the bootstrap race
winner is still running initdb); ``members/<name>`` a JSON object; ``config`` the dynamic config;
``failover`` {leader, member, scheduled_at}; ``sync`` {leader, sync_standby: "a,b"}; ``history`` a list of
[timeline, lsn, reason, timestamp, new_leader]; ``status`` {optime}.

A document that cannot be parsed never stops the loop: a bad member becomes ``valid=False`` (never
promoted, never a sync standby), a bad failover/sync key reads as absent, and a warning is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from raftpg.dcs import keys
from raftpg.model import ClusterView, DynamicConfig, Failover, HistoryEntry, Leader, Member, SyncState, Tags

log = logging.getLogger(__name__)


def _json(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        log.warning("ignoring unreadable %s document: %.80r", what, raw)
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def member_from_document(name: str, raw: str, revision: int) -> Member:
    data = _json(raw, f"member {name}")
    if not isinstance(data, dict):
        return Member(name=name, valid=False, revision=revision, state="unknown")
    return Member(
        name=name, role=str(data.get("role", "uninitialized")), state=str(data.get("state", "unknown")),
        api_url=data.get("api_url"), conn_url=data.get("conn_url"), timeline=_int(data.get("timeline")),
        lsn=_int(data.get("xlog_location")), replay_lsn=_int(data.get("replay_lsn")),
        receive_lsn=_int(data.get("receive_lsn")), sysid=data.get("sysid"),
        tags=Tags.from_dict(data.get("tags")), witness=bool(data.get("witness", False)),
        pending_restart=bool(data.get("pending_restart", False)),
        server_version=_int(data.get("server_version")), raft_addr=data.get("raft_addr"),
        version=data.get("version"), revision=revision,
    )


def member_document(member: Member) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "role": str(member.role), "state": member.state, "api_url": member.api_url,
        "conn_url": member.conn_url, "timeline": member.timeline, "xlog_location": member.lsn,
        "replay_lsn": member.replay_lsn, "receive_lsn": member.receive_lsn, "sysid": member.sysid,
        "tags": member.tags.to_dict(), "witness": member.witness, "pending_restart": member.pending_restart,
        "server_version": member.server_version, "raft_addr": member.raft_addr, "version": member.version,
    }
    return {k: v for k, v in doc.items() if v is not None}


def _scheduled_at(value: Any) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        log.warning("ignoring unreadable scheduled_at %.40r", value)
        return None


def failover_from_document(raw: str, revision: int) -> Failover | None:
    data = _json(raw, "failover")
    if not isinstance(data, dict):
        return None
    return Failover(leader=data.get("leader"), candidate=data.get("member") or data.get("candidate"),
                    scheduled_at=_scheduled_at(data.get("scheduled_at")), revision=revision)


def sync_from_document(raw: str, revision: int) -> SyncState | None:
    data = _json(raw, "sync")
    if not isinstance(data, dict):
        return None
    standbys = data.get("sync_standby") or ""
    names = standbys.split(",") if isinstance(standbys, str) else [str(s) for s in standbys]
    return SyncState(leader=data.get("leader"), sync_standby=tuple(sorted(n for n in names if n)),
                     revision=revision)


def sync_document(leader: str | None, standbys: tuple[str, ...]) -> dict[str, Any]:
    return {"leader": leader, "sync_standby": ",".join(sorted(standbys)) or None}


def history_from_document(raw: str) -> tuple[HistoryEntry, ...]:
    data = _json(raw, "history")
    entries = []
    for row in data if isinstance(data, list) else []:
        if isinstance(row, list) and len(row) >= 3 and _int(row[0]) is not None and _int(row[1]) is not None:
            timestamp = row[3] if len(row) > 3 and isinstance(row[3], (int, float)) else 0.0
            entries.append(HistoryEntry(int(row[0]), int(row[1]), str(row[2]), float(timestamp),
                                        row[4] if len(row) > 4 else None))
    return tuple(entries)


def cluster_from_documents(documents: Mapping[str, tuple[str, int]], revision: int) -> ClusterView:
    """``documents`` maps a key relative to the scope prefix to (value, mod_revision)."""
    def doc(name: str) -> tuple[str, int] | None:
        return documents.get(name)

    members = tuple(
        member_from_document(rel[len(keys.MEMBERS):], value, rev)
        for rel, (value, rev) in sorted(documents.items()) if rel.startswith(keys.MEMBERS)
    )
    config = doc(keys.CONFIG)
    config_data = _json(config[0], "config") if config else None
    leader = doc(keys.LEADER)
    status = doc(keys.STATUS)
    status_data = _json(status[0], "status") if status else None
    initialize = doc(keys.INITIALIZE)
    return ClusterView(
        initialize=initialize[0] if initialize else None,
        config=DynamicConfig.from_dict(config_data if isinstance(config_data, dict) else None),
        config_revision=config[1] if config else None,
        leader=Leader(leader[0], leader[1]) if leader and leader[0] else None,
        members=members,
        failover=failover_from_document(*doc(keys.FAILOVER)) if doc(keys.FAILOVER) else None,
        sync=sync_from_document(*doc(keys.SYNC)) if doc(keys.SYNC) else None,
        history=history_from_document(doc(keys.HISTORY)[0]) if doc(keys.HISTORY) else (),
        last_lsn=_int(status_data.get("optime")) if isinstance(status_data, dict) else None,
        revision=revision,
    )
