"""Stored documents <-> the ClusterView snapshot. Parsing lives here, at the edge.

Every backend stores the same documents (JSON, Patroni-compatible where Patroni has a shape):
``leader`` is the holder's name; ``initialize`` the system identifier ("" while the bootstrap race
winner is still running initdb); ``members/<name>`` a JSON object; ``config`` the dynamic config;
``failover`` {leader, member, scheduled_at}; ``sync`` {leader, sync_standby: "a,b", quorum}; ``history`` a list of
[timeline, lsn, reason, timestamp, new_leader]; ``status`` {optime}.

A document that cannot be read never stops the loop (``documents.py`` reads each one defensively, and
says how each unreadable key is read). In short:

==============  ==========================================================================================
key             when unreadable
==============  ==========================================================================================
members/<n>     an invalid member (``valid=False``): never promoted, never a synchronous standby
leader          held by a holder named with U+FFFD: nobody's, so the others wait for its TTL
initialize      the last good one this reader saw; else the sysid the leader's member key reports; else
                absent (then the bootstrap race fails on the existing key, so nothing is bootstrapped)
config          the last good config this reader saw; else ``fallback_config`` (the node's
                ``bootstrap.dcs``); else the built-in defaults. Re-validated with the same rules and bounds
                as ``PATCH /config``; ``config_revision`` stays the key's, so a PATCH can repair it
status          the last good optime this reader saw, else absent
failover        a request naming an unreadable leader: the primary clears it, nobody else acts on it
sync            naming an unreadable leader and no standby: nobody is eligible in synchronous mode until
                the primary rewrites it (an absent key would restrict no one)
history         unreadable rows left out; not a list: empty
==============  ==========================================================================================

Each problem is logged once when it appears or changes (not every cycle), once when it is gone, and
listed in ``ClusterView.problems`` (``GET /patroni`` shows them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from raftpg.config.dynamic import parse_dynamic_config
from raftpg.config.errors import ConfigError
from raftpg.dcs import keys
from raftpg.dcs.documents import (
    UNREADABLE,
    Unreadable,
    load_object,
    read_failover,
    read_failsafe,
    read_history,
    read_member,
    read_name,
    read_optime,
    read_slot_positions,
    read_sync,
    read_sysid,
)
from raftpg.model import ClusterView, DynamicConfig, Failover, HistoryEntry, Leader, Member, SyncState

log = logging.getLogger(__name__)

_PROBLEMS_SHOWN = 3  # per config document: the first few errors are enough to find the key


def member_document(member: Member) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "role": str(member.role), "state": member.state, "api_url": member.api_url,
        "conn_url": member.conn_url, "timeline": member.timeline, "xlog_location": member.lsn,
        "replay_lsn": member.replay_lsn, "receive_lsn": member.receive_lsn, "sysid": member.sysid,
        "tags": member.tags.to_dict(), "witness": member.witness, "pending_restart": member.pending_restart,
        "server_version": member.server_version, "raft_addr": member.raft_addr, "version": member.version,
        "progress": member.progress,
    }
    return {k: v for k, v in doc.items() if v is not None}


def failover_document(request: Failover) -> dict[str, Any]:
    """Patroni's shape: ``leader`` (a switchover), ``member`` (the candidate), ``scheduled_at`` (ISO 8601)."""
    doc: dict[str, Any] = {"leader": request.leader, "member": request.candidate}
    if request.scheduled_at is not None:
        doc["scheduled_at"] = datetime.fromtimestamp(request.scheduled_at, UTC).isoformat()
    return {k: v for k, v in doc.items() if v is not None}


def history_document(entries: tuple[HistoryEntry, ...]) -> list[list[Any]]:
    """Patroni's rows: ``[timeline, lsn, reason, timestamp, new_leader]``."""
    return [[e.timeline, e.lsn, e.reason, e.timestamp, e.new_leader] for e in entries]


def status_document(last_lsn: int, slots: Mapping[str, int] | None,
                    failsafe: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Patroni's shape: ``optime`` (the primary's WAL position) and ``slots`` (its slots' positions); with
    failsafe_mode, ``failsafe`` (member name -> REST API URL: the members the primary asks when it cannot
    reach the DCS; Patroni keeps it in a key of its own)."""
    return {"optime": last_lsn, **({"slots": dict(sorted(slots.items()))} if slots else {}),
            **({"failsafe": dict(sorted(failsafe.items()))} if failsafe is not None else {})}


def sync_document(leader: str | None, standbys: tuple[str, ...], quorum: int = 0) -> dict[str, Any]:
    """``quorum`` (quorum commit only, Patroni's field) is written when above 0."""
    return {"leader": leader, "sync_standby": ",".join(sorted(standbys)) or None,
            **({"quorum": quorum} if quorum > 0 else {})}


def sync_from_document(raw: str, revision: int) -> SyncState:
    """The sync state a writer just stored (its own document)."""
    return read_sync(raw, revision)[0]


def read_config(raw: Any) -> DynamicConfig:
    """A stored dynamic config, validated as ``PATCH /config`` validates it; Unreadable says why not."""
    data = load_object(raw)
    try:
        settings = parse_dynamic_config(data)
    except ConfigError as exc:
        shown = exc.errors[:_PROBLEMS_SHOWN]
        more = f" (and {len(exc.errors) - len(shown)} more)" if len(exc.errors) > len(shown) else ""
        raise Unreadable("; ".join(shown) + more) from None
    return replace(settings.to_model(), raw=tuple(sorted(data.items())))


class ClusterReader:
    """Reads snapshots for one client of the store, remembering what the table above needs: the last
    good config, initialize and optime, and which problems were already logged. Thread-safe (the HA loop
    and the API's operations read through the same client)."""

    def __init__(self, fallback_config: DynamicConfig | None = None) -> None:
        self.fallback_config = fallback_config
        self._lock = threading.Lock()
        self._good_config: DynamicConfig | None = None
        self._config_cache: tuple[Any, DynamicConfig | str] | None = None  # raw text -> parsed or problem
        self._good_initialize: str | None = None
        self._good_optime: int | None = None
        self._logged: dict[str, str] = {}  # key -> the problem last logged for it

    def read(self, documents: Mapping[str, tuple[Any, int]], revision: int) -> ClusterView:
        """``documents`` maps a key relative to the scope prefix to (stored value, mod_revision)."""
        with self._lock:
            problems: dict[str, str] = {}
            view = self._read(documents, revision, problems)
            self._log_changes(problems)
            return replace(view, problems=tuple(f"{key}: {text}" for key, text in sorted(problems.items())))

    def _read(self, documents: Mapping[str, tuple[Any, int]], revision: int,
              problems: dict[str, str]) -> ClusterView:
        members = []
        for rel, (raw, rev) in sorted(documents.items()):
            if rel.startswith(keys.MEMBERS):
                member, trouble = read_member(rel[len(keys.MEMBERS):], raw, rev)
                members.append(member)
                _note(problems, keys.MEMBERS + member.name, trouble)  # the name as shown: always valid text
        leader = self._leader(documents.get(keys.LEADER), problems)
        view = ClusterView(members=tuple(members), leader=leader, revision=revision)
        config = documents.get(keys.CONFIG)
        failover = documents.get(keys.FAILOVER)
        sync = documents.get(keys.SYNC)
        history = documents.get(keys.HISTORY)
        status = documents.get(keys.STATUS)
        return ClusterView(
            initialize=self._initialize(documents.get(keys.INITIALIZE), view, problems),
            config=self._config(config, problems), config_revision=config[1] if config else None,
            leader=leader, members=view.members,
            failover=_noted(problems, keys.FAILOVER, read_failover(*failover)) if failover else None,
            sync=_noted(problems, keys.SYNC, read_sync(*sync)) if sync else None,
            history=_noted(problems, keys.HISTORY, read_history(history[0])) if history else (),
            last_lsn=self._optime(status, problems),
            slot_positions=_noted(problems, keys.STATUS, read_slot_positions(status[0])) if status else (),
            failsafe=_noted(problems, keys.STATUS, read_failsafe(status[0])) if status else None,
            revision=revision,
        )

    # -------------------------------------------------------------- keys with a fallback
    def _leader(self, document: tuple[Any, int] | None, problems: dict[str, str]) -> Leader | None:
        if document is None or document[0] in ("", b""):
            return None
        name, problem = read_name(document[0])
        if problem:
            problems[keys.LEADER] = f"{problem}; held by an unreadable holder until its TTL runs out"
        return Leader(name, document[1])

    def _initialize(self, document: tuple[Any, int] | None, view: ClusterView,
                    problems: dict[str, str]) -> str | None:
        if document is None:
            return None
        sysid, problem = read_sysid(document[0])
        if problem is None:
            if sysid:
                self._good_initialize = sysid
            return sysid
        leader = view.leader_member
        if self._good_initialize is not None:
            sysid, source = self._good_initialize, "the last good value read"
        elif leader is not None and leader.valid and leader.sysid:
            sysid, source = leader.sysid, f"the system identifier {leader.name} reports"
        else:
            sysid, source = None, "nothing (no bootstrap can win the race for an existing key)"
        problems[keys.INITIALIZE] = f"{problem}; using {source}"
        return sysid

    def _config(self, document: tuple[Any, int] | None, problems: dict[str, str]) -> DynamicConfig:
        if document is None:
            return DynamicConfig()
        raw = document[0]
        cached = self._config_cache
        if cached is None or cached[0] != raw:  # validating is the costly part: once per new document
            try:
                parsed: DynamicConfig | str = read_config(raw)
            except Unreadable as exc:
                parsed = str(exc)
            self._config_cache = cached = (raw, parsed)
        result = cached[1]
        if isinstance(result, DynamicConfig):
            self._good_config = result
            return result
        if self._good_config is not None:
            config, source = self._good_config, "the last good config read"
        elif self.fallback_config is not None:
            config, source = self.fallback_config, "bootstrap.dcs from the local config file"
        else:
            config, source = DynamicConfig(), "the built-in defaults"
        problems[keys.CONFIG] = f"{result}; using {source}"
        return config

    def _optime(self, document: tuple[Any, int] | None, problems: dict[str, str]) -> int | None:
        if document is None:
            return None
        optime, trouble = read_optime(document[0])
        if not trouble:
            self._good_optime = optime if optime is not None else self._good_optime
            return optime
        problems[keys.STATUS] = "; ".join(trouble) + (
            "; using the last good optime read" if self._good_optime is not None else "")
        return self._good_optime

    # -------------------------------------------------------------- logging once per change
    def _log_changes(self, problems: dict[str, str]) -> None:
        for key, problem in problems.items():
            if self._logged.get(key) != problem:
                log.warning("DCS key %s is unreadable: %s", key, problem)
                self._logged[key] = problem
        for key in [k for k in self._logged if k not in problems]:
            del self._logged[key]
            log.info("DCS key %s is readable again (or gone)", key)


def _note(problems: dict[str, str], key: str, trouble: tuple[str, ...]) -> None:
    if trouble:  # after what an earlier reader of the same key found (the status key has two)
        problems[key] = "; ".join((problems[key], *trouble) if key in problems else trouble)


def _noted(problems: dict[str, str], key: str, result: tuple[Any, tuple[str, ...]]) -> Any:
    _note(problems, key, result[1])
    return result[0]


def cluster_from_documents(documents: Mapping[str, tuple[Any, int]], revision: int) -> ClusterView:
    """One snapshot read by a reader with no memory (tests, one-off reads)."""
    return ClusterReader().read(documents, revision)


__all__ = ["UNREADABLE", "ClusterReader", "cluster_from_documents", "member_document", "read_config", "status_document",
           "sync_document", "sync_from_document"]
