"""The DCS port: what the HA loop needs of a distributed configuration store, and nothing more.

Every method is bounded by a deadline (``timeout_s``, at most ``retry_timeout``) and raises
:class:`DcsError` when the store cannot answer in time; a lost compare-and-set is not an error but a
``False``/``None`` result. Methods are grouped by the consistency they need:

Leader key (linearizable compare-and-set; the safety of the whole system rests on these):
- ``acquire_leader``: create the leader key only if absent (must-not-exist), with a TTL.
- ``renew_leader``: refresh the TTL only if the key still names us. The caller counts its lease from
  the moment it *called* (safety rule 2): the store starts its countdown when it applies the refresh,
  which is later, so the caller's view of its lease is never longer than the store's.
- ``release_leader``: delete only if it names us. ``hand_over_leader``: rewrite it to a new holder only
  if it names us (switchover).

Initialization race: ``initialize`` creates the ``initialize`` key only if absent; exactly one caller in
a cluster's life gets True. ``set_initialize`` then stores the system identifier.

Snapshot: ``load`` reads every key under ``<namespace><scope>/`` at one revision. With
``linearizable=True`` (used for leader decisions) it reflects every write acknowledged before it started.
``member`` names the caller's own member (the HA loop passes it): a store whose member keys are KV leases
may make its read barrier a refresh of that key (one log entry instead of a barrier and a rewrite, see
``kvdcs.py``); the others ignore it.

Everything else (member keys with a TTL, config/failover/sync/history/status with optional CAS on the
revision the caller read) tolerates being a cycle stale. ``expected_revision=None`` means must-not-exist
for ``set_config``/``set_failover`` (and ``set_failover(None, None)`` deletes unconditionally), and
unconditional for ``set_sync`` (only the primary writes it). ``renew_leader`` applies a changed ``ttl_s``;
the revision ``acquire_leader`` returns equals the key's revision in a later ``load``. ``watch`` blocks until something under the scope
changes after a revision, so the loop wakes at once when the leader key disappears.

Values cross the port as model values (``Member``, ``Failover``, ``HistoryEntry``, ``SyncState``); the
documents they are stored as are written and read in ``codec.py`` only. ``set_config`` takes the dynamic
config document itself: it is the user's document, kept key for key. ``delete_cluster`` wipes the scope
(``raftpgctl remove``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from raftpg.config.dynamic import RAFT_FAILSAFE_REFUSAL
from raftpg.model import ClusterView, Failover, HistoryEntry, Leader, Member, SyncState

__all__ = ["RAFT_FAILSAFE_REFUSAL", "Dcs", "DcsError"]


class DcsError(Exception):
    """The store could not answer within the deadline (no quorum, unreachable, timeout).

    ``unknown_outcome`` is True when a write may have been applied even though no answer came back.
    """

    def __init__(self, message: str, *, unknown_outcome: bool = False) -> None:
        super().__init__(message)
        self.unknown_outcome = unknown_outcome


class Dcs(Protocol):
    # None: Patroni's failsafe_mode may be enabled on this store; else why it is refused
    failsafe_refusal: str | None

    def load(self, *, linearizable: bool = True, timeout_s: float, member: str | None = None) -> ClusterView: ...

    def watch(self, after_revision: int, timeout_s: float) -> bool:
        """True if a key that drives decisions (leader, failover, config, sync, initialize, history;
        not member keys nor status, which change every cycle) changed after ``after_revision``, or the
        store cannot tell; False on timeout. Never raises: an unreachable store returns False."""

    def acquire_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None: ...

    def renew_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None: ...

    def release_leader(self, name: str, *, timeout_s: float) -> bool: ...

    def hand_over_leader(self, name: str, candidate: str, ttl_s: float, *, timeout_s: float) -> bool: ...

    def initialize(self, *, timeout_s: float) -> bool: ...

    def set_initialize(self, sysid: str, *, timeout_s: float) -> None: ...

    def cancel_initialize(self, *, timeout_s: float) -> None: ...

    def touch_member(self, member: Member, ttl_s: float, *, timeout_s: float) -> None: ...

    def delete_member(self, name: str, *, timeout_s: float) -> None: ...

    def set_config(self, document: dict[str, Any], expected_revision: int | None, *,
                   timeout_s: float) -> bool: ...

    def set_failover(self, request: Failover | None, expected_revision: int | None, *,
                     timeout_s: float) -> bool: ...

    def set_sync(self, leader: str | None, standbys: tuple[str, ...], expected_revision: int | None, *,
                 timeout_s: float, quorum: int = 0) -> SyncState | None: ...

    def set_history(self, entries: tuple[HistoryEntry, ...], *, timeout_s: float) -> None: ...

    def set_status(self, last_lsn: int, slots: Mapping[str, int] | None = None,
                   failsafe: Mapping[str, str] | None = None, *, timeout_s: float) -> None:
        """The status key: the primary's WAL position (``optime``), its slots' positions (``slots``) and,
        with failsafe_mode, the failsafe topology (``failsafe``: member name -> REST API URL)."""

    def delete_cluster(self, *, timeout_s: float) -> None:
        """Delete every key under the scope (``raftpgctl remove``): the operator starts the cluster afresh."""

    def close(self) -> None: ...
