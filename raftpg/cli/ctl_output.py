"""How raftpgctl shows things: the member table (patronictl's columns plus Raft), topology, history,
config diffs. Pure functions from API documents to text or JSON-ready rows."""

from __future__ import annotations

import difflib
import json
from datetime import datetime
from typing import Any

import yaml
from tabulate import tabulate

MB = 1024 * 1024
_ROLE_TEXT = {"leader": "Leader", "replica": "Replica", "sync_standby": "Sync Standby", "witness": "Witness",
              "uninitialized": "Uninitialized"}
_DEFAULT_TAGS = {"nofailover": False, "failover_priority": 1, "noloadbalance": False, "clonefrom": False,
                 "nosync": False}


def _host(member: dict[str, Any]) -> str:
    host, port = member.get("host"), member.get("port")
    if not host:
        return ""
    return f"{host}:{port}" if port and port != 5432 else str(host)


def _lag(member: dict[str, Any]) -> Any:
    lag = member.get("lag")
    if lag is None:
        return ""
    if isinstance(lag, int):
        return round(lag / MB)  # whole MB, as patronictl shows it
    return str(lag)


def _tags(member: dict[str, Any]) -> str:
    tags = member.get("tags") or {}
    shown = {k: v for k, v in tags.items() if _DEFAULT_TAGS.get(k, object()) != v}
    return ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(shown.items()))


def member_rows(cluster: dict[str, Any], topology: bool = False) -> list[dict[str, Any]]:
    """One dict per member, keyed by column name (also the ``--format json`` output of ``list``)."""
    members = cluster.get("members") or []
    has_raft = any(m.get("raft") for m in members)
    pending = any(m.get("pending_restart") for m in members)
    tagged = any(_tags(m) for m in members)
    rows = []
    for member in _tree_order(members) if topology else members:
        name = member["name"]
        if topology and member.get("role") not in ("leader", "witness"):
            name = "+ " + name
        row: dict[str, Any] = {
            "Cluster": cluster.get("scope"), "Member": name, "Host": _host(member),
            "Role": _ROLE_TEXT.get(member.get("role", ""), member.get("role")), "State": member.get("state"),
            "TL": member.get("timeline") if member.get("timeline") is not None else "",
            "Lag in MB": _lag(member),
        }
        if has_raft:
            row["Raft"] = member.get("raft") or ""
        if pending:
            row["Pending restart"] = "*" if member.get("pending_restart") else ""
        if tagged:
            row["Tags"] = _tags(member)
        rows.append(row)
    return rows


def _tree_order(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every replica streams from the leader (no cascading): the leader, its replicas, then witnesses."""
    leader = [m for m in members if m.get("role") == "leader"]
    witnesses = [m for m in members if m.get("role") == "witness"]
    rest = [m for m in members if m not in leader and m not in witnesses]
    return leader + rest + witnesses


def cluster_table(cluster: dict[str, Any], topology: bool = False) -> str:
    rows = member_rows(cluster, topology)
    for row in rows:
        row.pop("Cluster")
    sysid = cluster.get("system_identifier") or "uninitialized"
    lines = [f"+ Cluster: {cluster.get('scope')} ({sysid}) +"]
    if rows:
        table = tabulate([list(r.values()) for r in rows], headers=list(rows[0].keys()), tablefmt="pretty",
                         colalign=("left",) * len(rows[0]))
        lines.append(table)
    else:
        lines.append("(no members)")
    if cluster.get("pause"):
        lines.append(" Maintenance mode: on")
    scheduled = cluster.get("scheduled_switchover")
    if scheduled:
        lines.append(f" Switchover scheduled at: {scheduled.get('at')}")
        lines.append(f"                    from: {scheduled.get('from')}")
        if scheduled.get("to"):
            lines.append(f"                      to: {scheduled.get('to')}")
    return "\n".join(lines)


def history_rows(history: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"TL": h[0], "LSN": h[1], "Reason": h[2], "Timestamp": h[3], "New Leader": h[4]}
            for h in history]


def table(rows: list[dict[str, Any]], empty: str = "(none)") -> str:
    if not rows:
        return empty
    return tabulate([list(r.values()) for r in rows], headers=list(rows[0].keys()), tablefmt="pretty",
                    colalign=("left",) * len(rows[0]))


def raft_rows(raft: dict[str, Any], cluster: dict[str, Any] | None) -> list[dict[str, Any]]:
    names = {m.get("raft_addr"): m["name"] for m in (cluster or {}).get("members", []) if m.get("raft_addr")}
    rows = []
    for entry in raft.get("members") or []:
        addr = entry.get("addr")
        rows.append({"Raft address": addr, "Member": names.get(addr, ""),
                     "Raft role": "leader" if addr == raft.get("leader") else "follower",
                     "Connected": "yes" if entry.get("connected") else "no"})
    return rows


def to_yaml(document: Any) -> str:
    return yaml.safe_dump(document, default_flow_style=False, sort_keys=True)


def config_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    return "".join(difflib.unified_diff(to_yaml(before).splitlines(True), to_yaml(after).splitlines(True),
                                        fromfile="before", tofile="after"))


def as_json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False, default=str)


def local_time(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().isoformat(timespec="seconds")
    except ValueError:
        return iso
