"""What the HA decision asks for: small frozen dataclasses named as imperative verbs.

The executor runs them in order and stops at the first one that fails (a lost compare-and-set, a
PostgreSQL error); the next cycle decides afresh. Each carries exactly what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaceInitialize:
    """Create the ``initialize`` key only if absent; fails (stops the sequence) if another node won."""


@dataclass(frozen=True)
class Bootstrap:
    """initdb (never over existing data), start as primary, create roles, run post_bootstrap; store the
    system identifier. The leader key is renewed throughout; a failure moves the new data aside."""


@dataclass(frozen=True)
class AdoptExistingData:
    """This node won the initialize race holding data already: store its system identifier."""

    sysid: str


@dataclass(frozen=True)
class AcquireLeaderKey:
    """Create the leader key naming this node (must-not-exist). The lease counts from the call."""


@dataclass(frozen=True)
class RenewLeaderKey:
    """Refresh the leader key if it still names this node. The lease counts from the call."""


@dataclass(frozen=True)
class ReleaseLeaderKey:
    """Delete the leader key if it still names this node."""


@dataclass(frozen=True)
class HandOverLeaderKey:
    """Switchover: rewrite the leader key to ``candidate`` if it still names this node."""

    candidate: str


@dataclass(frozen=True)
class Promote:
    """Promote the local replica. Only ever emitted after AcquireLeaderKey/RenewLeaderKey in the same
    decision (safety rule 1); the executor arms the fence/watchdog before promoting."""


@dataclass(frozen=True)
class StartPrimary:
    """Start local PostgreSQL as a primary (it was one). Only with the lease held (as Promote)."""


@dataclass(frozen=True)
class StartReplica:
    """Start local PostgreSQL as a replica of ``leader`` (None: a standby with no upstream yet).

    ``rewind``: the data was a primary; bring it back with pg_rewind from the leader, or a fresh clone
    when rewind is impossible (the old data dir is kept aside, never deleted).
    """

    leader: str | None
    conn_url: str | None
    rewind: bool = False


@dataclass(frozen=True)
class FollowLeader:
    """Point the running replica at ``leader`` (primary_conninfo, slot), reloading PostgreSQL."""

    leader: str
    conn_url: str


@dataclass(frozen=True)
class RepairReplica:
    """A running replica has not streamed from ``leader`` for a while (diverged WAL, a missing slot, a
    broken wal receiver). If ``leader`` is reachable: stop PostgreSQL, pg_rewind onto it (``reclone``:
    move the data aside, kept, and clone afresh), start as its replica. If it cannot be reached, nothing
    is touched (the action fails): a replica that is only cut off keeps serving reads."""

    leader: str
    conn_url: str
    reclone: bool = False


@dataclass(frozen=True)
class CloneFrom:
    """Fill the empty data dir with pg_basebackup from ``source``."""

    source: str
    conn_url: str


@dataclass(frozen=True)
class Reinitialize:
    """Move the data dir aside (kept, never deleted) and clone afresh from ``source``."""

    source: str
    conn_url: str


@dataclass(frozen=True)
class StopPostgres:
    mode: str = "fast"  # smart | fast | immediate
    reason: str = ""


@dataclass(frozen=True)
class RestartPostgres:
    reason: str = ""


@dataclass(frozen=True)
class ReloadPostgres:
    pass


@dataclass(frozen=True)
class Checkpoint:
    pass


@dataclass(frozen=True)
class EnsureSlots:
    """On the primary: a physical replication slot per other data member, and no stale ones."""

    members: tuple[str, ...]


@dataclass(frozen=True)
class SetSynchronousStandbys:
    """Write ``synchronous_standby_names`` and reload (sync mode; see ha/sync.py for the order)."""

    value: str


@dataclass(frozen=True)
class WriteSyncKey:
    standbys: tuple[str, ...]
    expected_revision: int | None


@dataclass(frozen=True)
class ClearFailoverKey:
    expected_revision: int | None
    reason: str = ""


@dataclass(frozen=True)
class RecordPromotion:
    """Append to the history key and publish the new primary's position (after a promotion)."""

    reason: str


@dataclass(frozen=True)
class PublishPosition:
    """Store the primary's WAL position in the status key (the reference for maximum_lag_on_failover)."""

    lsn: int


@dataclass(frozen=True)
class MoveDataAside:
    """Stop PostgreSQL if a postmaster runs, and rename the data directory aside (kept, never deleted):
    the data of a bootstrap that never registered its cluster."""

    reason: str


@dataclass(frozen=True)
class FinishBootstrap:
    """The bootstrap registered its system identifier: forget that it was in progress."""


@dataclass(frozen=True)
class Refuse:
    """Stop this agent: continuing would break a safety rule (a foreign data dir). Fatal."""

    reason: str


@dataclass(frozen=True)
class Fence:
    """Fail closed: stop PostgreSQL immediately (an invariant was violated)."""

    reason: str


Action = (
    RaceInitialize | Bootstrap | AdoptExistingData | AcquireLeaderKey | RenewLeaderKey | ReleaseLeaderKey
    | HandOverLeaderKey | Promote | StartPrimary | StartReplica | FollowLeader | RepairReplica | CloneFrom
    | Reinitialize
    | StopPostgres | RestartPostgres | ReloadPostgres | Checkpoint | EnsureSlots | SetSynchronousStandbys
    | WriteSyncKey | ClearFailoverKey | RecordPromotion | PublishPosition | MoveDataAside | FinishBootstrap
    | Refuse | Fence
)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    reason: str

    def has(self, kind: type) -> bool:
        return any(isinstance(a, kind) for a in self.actions)
