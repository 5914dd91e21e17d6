"""The DCS on the replicated KV (the embedded Raft store, or its in-memory twin in tests).

Leader and member keys are KV leases (``ttl_s``) expired by the Raft leader; renewal is a ``touch``
guarded on the holder's name, so it does not bump the revision (watchers are not woken every loop).

Log entries per HA cycle (issue 15: each costs every Raft voter encryption, pickling and a round trip):
a linearizable read needs something committed through the log and applied here; when the HA loop names
its member, that something is a ``touch`` of its own member key instead of a no-op barrier, so the read
also keeps the key alive. The member document is then rewritten only when it differs from what that read
found (the key was refreshed a moment ago), and the status document only when it differs from the stored
one. An idle three-node cluster commits 4 entries per second at loop_wait 1 (three refreshing reads and
the leader's renewal) instead of 8.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from raftpg.clock import Clock, SystemClock
from raftpg.consensus.api import KvClient, KvError, KvRejected, UnknownOutcome
from raftpg.dcs import keys
from raftpg.dcs.base import DcsError
from raftpg.dcs.codec import (
    ClusterReader,
    failover_document,
    history_document,
    member_document,
    status_document,
    sync_document,
    sync_from_document,
)
from raftpg.dcs.keys import KeyLayout
from raftpg.kv import Committed, Conflict, Guard
from raftpg.model import ClusterView, DynamicConfig, Failover, HistoryEntry, Leader, Member, SyncState

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


class KvDcs:
    def __init__(self, kv: KvClient, layout: KeyLayout, *, owns_kv: bool = False,
                 fallback_config: DynamicConfig | None = None, failsafe_refusal: str | None = None,
                 clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()  # budgets of calls that wait on real threads and sockets
        self.failsafe_refusal = failsafe_refusal  # the embedded Raft's: RAFT_FAILSAFE_REFUSAL
        self.kv = kv
        self.layout = layout
        self._owns_kv = owns_kv
        self.reader = ClusterReader(fallback_config)  # see raftpg.dcs.codec: the config used when unreadable
        # What the last refreshing read found and may spare one rewrite of (see the module docstring):
        # my member key's (value, ttl) right after that read refreshed it, and the status value it found.
        # Each is used at most once: a later write needs a later read to be skipped.
        self._lock = threading.Lock()
        self._member_fresh: tuple[str, str, float] | None = None  # (name, value, ttl_s)
        self._status_seen: str | None = None

    def _call(self, what: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        except KvRejected as exc:
            raise DcsError(f"{what}: rejected: {exc}") from exc
        except UnknownOutcome as exc:
            raise DcsError(f"{what}: {exc}", unknown_outcome=True) from exc
        except KvError as exc:
            raise DcsError(f"{what}: {exc}", unknown_outcome=True) from exc

    # -------------------------------------------------------------- reads
    def load(self, *, linearizable: bool = True, timeout_s: float, member: str | None = None) -> ClusterView:
        refreshed: bool | None = None
        barrier = linearizable
        if linearizable and member is not None:
            with self._lock:
                self._member_fresh = self._status_seen = None  # spared only by the read that follows
            deadline = self._clock.monotonic() + timeout_s  # the caller's budget covers the fallback too
            refreshed = self._refreshing_barrier(member, timeout_s)
            barrier = refreshed is None  # its fate is unknown: read behind a plain barrier instead
            if barrier:
                timeout_s = max(0.0, deadline - self._clock.monotonic())
        revision, kvs = self._call("read cluster", self.kv.range, self.layout.prefix,
                                   linearizable=barrier, timeout_s=timeout_s)
        documents = {self.layout.relative(kv.key): (kv.value, kv.mod_revision) for kv in kvs}
        if linearizable and member is not None:
            current = {kv.key: kv for kv in kvs}
            mine, status = current.get(self.layout.member(member)), current.get(self.layout.key(keys.STATUS))
            with self._lock:
                self._member_fresh = (member, mine.value, mine.ttl_s) if (
                    refreshed and mine is not None and mine.ttl_s is not None) else None
                self._status_seen = status.value if status is not None else None
        return self.reader.read(documents, revision)

    def _refreshing_barrier(self, member: str, timeout_s: float) -> bool | None:
        """Touch ``member``'s key through the log: once the answer is here the touch is applied here, so a
        local read is linearizable (like a barrier). True: the key existed and its TTL restarted; False:
        there is no such key (the touch changed nothing, still a barrier); None: the touch's fate is
        unknown (a Raft leader change in flight): the caller reads behind a plain barrier instead."""
        def touch() -> bool | None:
            try:
                return isinstance(self.kv.touch(self.layout.member(member), timeout_s=timeout_s), Committed)
            except UnknownOutcome:
                return None

        return self._call("read cluster", touch)  # any other failure: the DcsError every read raises

    def watch(self, after_revision: int, timeout_s: float) -> bool:
        quiet = (self.layout.prefix + keys.MEMBERS, self.layout.key(keys.STATUS))
        return self.kv.watch(self.layout.prefix, after_revision, timeout_s, quiet) is not None

    # -------------------------------------------------------------- leader key
    def acquire_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None:
        result = self._call("acquire leader key", self.kv.put, self.layout.key(keys.LEADER), name,
                            guard=Guard(exists=False), ttl_s=ttl_s, timeout_s=timeout_s)
        return Leader(name, result.revision) if isinstance(result, Committed) else None

    def renew_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None:
        key = self.layout.key(keys.LEADER)
        result = self._call("renew leader key", self.kv.touch, key, guard=Guard(value=name),
                            timeout_s=timeout_s)
        if isinstance(result, Committed) and result.kv is not None and result.kv.ttl_s != ttl_s:
            # the TTL changed in the dynamic config: rewrite the key with the new one, still guarded
            result = self._call("renew leader key", self.kv.put, key, name, guard=Guard(value=name),
                                ttl_s=ttl_s, timeout_s=timeout_s)
        if isinstance(result, Committed) and result.kv is not None:
            return Leader(name, result.kv.mod_revision)
        return None

    def release_leader(self, name: str, *, timeout_s: float) -> bool:
        result = self._call("release leader key", self.kv.delete, self.layout.key(keys.LEADER),
                            guard=Guard(value=name), timeout_s=timeout_s)
        return isinstance(result, Committed)

    def hand_over_leader(self, name: str, candidate: str, ttl_s: float, *, timeout_s: float) -> bool:
        result = self._call("hand over leader key", self.kv.put, self.layout.key(keys.LEADER), candidate,
                            guard=Guard(value=name), ttl_s=ttl_s, timeout_s=timeout_s)
        return isinstance(result, Committed)

    # -------------------------------------------------------------- initialization
    def initialize(self, *, timeout_s: float) -> bool:
        result = self._call("initialize race", self.kv.put, self.layout.key(keys.INITIALIZE), "",
                            guard=Guard(exists=False), timeout_s=timeout_s)
        return isinstance(result, Committed)

    def set_initialize(self, sysid: str, *, timeout_s: float) -> None:
        self._call("store system identifier", self.kv.put, self.layout.key(keys.INITIALIZE), sysid,
                   guard=Guard(value=""), timeout_s=timeout_s)

    def cancel_initialize(self, *, timeout_s: float) -> None:
        self._call("cancel initialize", self.kv.delete, self.layout.key(keys.INITIALIZE),
                   guard=Guard(value=""), timeout_s=timeout_s)

    # -------------------------------------------------------------- members and the rest
    def touch_member(self, member: Member, ttl_s: float, *, timeout_s: float) -> None:
        name, value = member.name, _dumps(member_document(member))
        with self._lock:
            fresh, self._member_fresh = self._member_fresh, None
        if fresh == (name, value, ttl_s):
            return  # the read of this cycle restarted the key's TTL, and it holds this very document
        self._call("update member key", self.kv.put, self.layout.member(name), value,
                   ttl_s=ttl_s, timeout_s=timeout_s)

    def delete_cluster(self, *, timeout_s: float) -> None:
        _, kvs = self._call("list the cluster's keys", self.kv.range, self.layout.prefix, linearizable=True,
                            timeout_s=timeout_s)
        for kv in kvs:
            self._call("delete the cluster's keys", self.kv.delete, kv.key, timeout_s=timeout_s)

    def delete_member(self, name: str, *, timeout_s: float) -> None:
        self._call("delete member key", self.kv.delete, self.layout.member(name), timeout_s=timeout_s)

    def _put_guarded(self, what: str, name: str, value: str, expected_revision: int | None,
                     timeout_s: float) -> Committed | Conflict:
        guard = Guard(exists=False) if expected_revision is None else Guard(mod_revision=expected_revision)
        return self._call(what, self.kv.put, self.layout.key(name), value, guard=guard, timeout_s=timeout_s)

    def set_config(self, document: dict[str, Any], expected_revision: int | None, *,
                   timeout_s: float) -> bool:
        result = self._put_guarded("write config", keys.CONFIG, _dumps(document), expected_revision, timeout_s)
        return isinstance(result, Committed)

    def set_failover(self, request: Failover | None, expected_revision: int | None, *,
                     timeout_s: float) -> bool:
        document = None if request is None else failover_document(request)
        key = self.layout.key(keys.FAILOVER)
        if document is None:
            guard = Guard(mod_revision=expected_revision) if expected_revision is not None else None
            result = self._call("clear failover", self.kv.delete, key, guard=guard, timeout_s=timeout_s)
            return isinstance(result, Committed)
        result = self._put_guarded("write failover", keys.FAILOVER, _dumps(document), expected_revision,
                                   timeout_s)
        return isinstance(result, Committed)

    def set_sync(self, leader: str | None, standbys: tuple[str, ...], expected_revision: int | None, *,
                 timeout_s: float, quorum: int = 0) -> SyncState | None:
        value = _dumps(sync_document(leader, standbys, quorum))
        guard = Guard(mod_revision=expected_revision) if expected_revision is not None else None
        result = self._call("write sync", self.kv.put, self.layout.key(keys.SYNC), value, guard=guard,
                            timeout_s=timeout_s)
        if isinstance(result, Committed):
            return sync_from_document(value, result.revision)
        return None

    def set_history(self, entries: tuple[HistoryEntry, ...], *, timeout_s: float) -> None:
        self._call("write history", self.kv.put, self.layout.key(keys.HISTORY), _dumps(history_document(entries)),
                   timeout_s=timeout_s)

    def set_status(self, last_lsn: int, slots: Mapping[str, int] | None = None,
                   failsafe: Mapping[str, str] | None = None, *, timeout_s: float) -> None:
        value = _dumps(status_document(last_lsn, slots, failsafe))
        with self._lock:
            seen, self._status_seen = self._status_seen, None
        if value == seen:
            return  # the last refreshing read found this very document stored
        self._call("write status", self.kv.put, self.layout.key(keys.STATUS), value, timeout_s=timeout_s)

    def close(self) -> None:
        if self._owns_kv:
            self.kv.close()  # type: ignore[attr-defined]
