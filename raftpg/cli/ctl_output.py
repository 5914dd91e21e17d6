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
FORMATS = ("pretty", "tsv", "json", "yaml", "yml", "topology")
# patronictl 4.1's columns; the optional ones appear with -e or when any member has a value for them
COLUMNS = ["Cluster", "Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN",
           "Replay Lag"]
OPTIONAL = ["Pending restart", "Pending restart reason", "Scheduled restart", "Tags"]


def _lag_mb(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return round(value / MB)  # whole MB, as patronictl shows it
    return "" if value in (None, "unknown") else value


def _role_text(role: str | None) -> str:
    return (role or "").replace("_", " ").title()


def _restart_reason(member: dict[str, Any], short: bool) -> str:
    lines = []
    for name, values in (member.get("pending_restart_reason") or {}).items():
        text = f"{name}: {values.get('old_value')}->{values.get('new_value')}"
        lines.append(f"{name}: [hidden - too long]" if short and len(text) > 50 else text)
    return "\n".join(lines)


def _state_text(member: dict[str, Any], fmt: str) -> Any:
    """The state; a replica being created shows its progress where people read it (``creating replica
    43 %``), scripts (json, yaml, tsv) get Patroni's plain state."""
    progress = member.get("progress")
    if fmt in ("pretty", "topology") and isinstance(progress, int) and not isinstance(progress, bool):
        return f"{member.get('state')} {progress} %"
    return member.get("state")


def member_rows(cluster: dict[str, Any], topology: bool = False, extended: bool = False,
                fmt: str = "pretty") -> tuple[list[str], list[list[Any]]]:
    """patronictl list's columns and rows (``--format json`` drops empty cells, as patronictl does)."""
    members = [m for m in cluster.get("members") or []]
    data = [m for m in members if m.get("host")]
    columns = list(COLUMNS)
    keys = {"Pending restart": "pending_restart", "Pending restart reason": "pending_restart_reason",
            "Scheduled restart": "scheduled_restart", "Tags": "tags"}
    for column in OPTIONAL:
        if extended or any(_shown_tags(m) if column == "Tags" else m.get(keys[column]) for m in data):
            columns.append(column)
    if extended and any(m.get("raft") for m in members):
        columns.append("Raft")
    append_port = any(m.get("port") not in (None, 5432) for m in data) or \
        len({m.get("host") for m in data}) < len(data)
    rows = []
    for member in _tree_order(members) if topology else members:
        name = member["name"]
        if topology and member.get("role") not in ("leader", "witness"):
            name = "+ " + name
        host = member.get("host") or ""
        if append_port and host and member.get("port"):
            host = f"{host}:{member['port']}"
        receive = (member.get("receive_lsn"), member.get("receive_lag"))
        replay = (member.get("replay_lsn"), member.get("replay_lag"))
        if receive[0] == "unknown" and replay[0] == "unknown" and member.get("lsn") not in (None, "unknown"):
            # patronictl's rule for members that publish one position only
            pair = (member.get("lsn"), member.get("lag"))
            receive, replay = (pair, ("", "")) if member.get("state") == "streaming" else (("", ""), pair)
        cells = {
            "Cluster": cluster.get("scope"), "Member": name, "Host": host, "Role": _role_text(member.get("role")),
            "State": _state_text(member, fmt), "TL": member.get("timeline") if member.get("timeline") is not None else "",
            "Receive LSN": "" if receive[0] in (None, "unknown") else receive[0], "Receive Lag": _lag_mb(receive[1]),
            "Replay LSN": "" if replay[0] in (None, "unknown") else replay[0], "Replay Lag": _lag_mb(replay[1]),
            "Pending restart": "*" if member.get("pending_restart") else "",
            "Pending restart reason": _restart_reason(member, fmt in ("pretty", "topology")),
            "Scheduled restart": (member.get("scheduled_restart") or {}).get("schedule", ""),
            "Tags": _shown_tags(member) or "", "Raft": member.get("raft") or "",
        }
        rows.append([cells[c] for c in columns])
    return columns, rows


def _shown_tags(member: dict[str, Any]) -> dict[str, Any]:
    """The tags patronictl shows: those set to something other than their default."""
    tags = member.get("tags") or {}
    return {k: v for k, v in tags.items() if _DEFAULT_TAGS.get(k, object()) != v}


_DEFAULT_TAGS = {"nofailover": False, "failover_priority": 1, "noloadbalance": False, "clonefrom": False,
                 "nosync": False, "nostream": False}


def _tree_order(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every replica streams from the leader (no cascading): the leader, its replicas, then witnesses."""
    leader = [m for m in members if m.get("role") == "leader"]
    witnesses = [m for m in members if m.get("role") == "witness"]
    rest = [m for m in members if m not in leader and m not in witnesses]
    return leader + rest + witnesses


def render(columns: list[str], rows: list[list[Any]], fmt: str, title: str = "", delimiter: str = "\t") -> str:
    """patronictl's print_output: json/yaml a list of objects (empty cells dropped when there is a title),
    tsv with the header row, pretty/topology a table under the title."""
    if fmt in ("json", "yaml", "yml"):
        elements = [{k: v for k, v in zip(columns, r, strict=False) if not title or str(v)} for r in rows]
        return json.dumps(elements) if fmt == "json" else to_yaml(elements).rstrip()
    listing = bool(title and columns and columns[0] == "Cluster")
    if listing and "Tags" in columns:
        i = columns.index("Tags")
        for row in rows:
            if row[i]:
                row[i] = yaml.safe_dump(row[i], default_flow_style=fmt != "pretty").strip()
    if fmt == "tsv":
        return "\n".join(delimiter.join(map(str, r)) for r in ([columns, *rows] if columns else rows))
    if listing:
        columns, rows = columns[1:], [r[1:] for r in rows]
    body = tabulate(rows, headers=columns, tablefmt="pretty", colalign=("left",) * len(columns)) if rows \
        else "(no members)"
    return f"+{title}+\n{body}" if title else body


def cluster_table(cluster: dict[str, Any], topology: bool = False, extended: bool = False,
                  fmt: str = "pretty") -> str:
    columns, rows = member_rows(cluster, topology, extended, fmt)
    if fmt in ("pretty", "topology"):  # patronictl's table heads both lag columns "Lag"
        columns = ["Lag" if c in ("Receive Lag", "Replay Lag") else c for c in columns]
    sysid = cluster.get("system_identifier") or "uninitialized"
    text = render(columns, rows, fmt, f" Cluster: {cluster.get('scope')} ({sysid}) ")
    if fmt not in ("pretty", "topology"):
        return text
    lines = [text]
    if cluster.get("pause"):
        lines.append(" Maintenance mode: on")
    scheduled = cluster.get("scheduled_switchover")
    if scheduled:
        lines.append(f" Switchover scheduled at: {scheduled.get('at')}")
        lines.append(f"                    from: {scheduled.get('from')}")
        if scheduled.get("to"):
            lines.append(f"                      to: {scheduled.get('to')}")
    return "\n".join(lines)


def history_rows(history: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """patronictl history's columns: TL, LSN, Reason, Timestamp, New Leader."""
    return ["TL", "LSN", "Reason", "Timestamp", "New Leader"], [list(h[:5]) for h in history]


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
