"""What the HA decision asks for: small frozen dataclasses named as imperative verbs.

The executor runs them in order and stops at the first one that fails (a lost compare-and-set, a
PostgreSQL error, an unreachable source); the next cycle decides afresh. Each carries exactly what it
needs, and each is one step: sequences (a bootstrap, a repair) are spelled out by ``decide``, so every
choice between them is a row of a table test. ``retry_soon``: after this action fails the loop goes
again in 0.2 s (False: at its normal pace, e.g. waiting for an unreachable primary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from raftpg.model import DynamicConfig, PermanentSlot


@dataclass(frozen=True)
class RaceInitialize:
    """Create the ``initialize`` key only if absent; fails (stops the sequence) if another node won."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class Initdb:
    """initdb into the missing or empty data dir (never over data), marked as a bootstrap in progress.
    A long step: the lease is renewed from another thread while it runs."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class PostBootstrap:
    """On the new, running primary: raftpg's roles, then the user's post_bootstrap (a long step too)."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class RegisterCluster:
    """Store this data dir's system identifier in the ``initialize`` key: the bootstrap is done. Only
    with the lease held (checked right before)."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class CancelInitialize:
    """Give the bootstrap back (delete the ``initialize`` key while it is still empty), so any node may
    race for it again after this one's attempt failed."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class FinishBootstrap:
    """The bootstrap registered its system identifier: forget that it was in progress."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class AdoptExistingData:
    """This node won the initialize race holding data already: store its system identifier."""

    sysid: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class AcquireLeaderKey:
    """Create the leader key naming this node (must-not-exist). The lease counts from the call. Refused
    (not done) when the decision is older than ``loop_wait``: the agent froze between deciding and acting."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class RenewLeaderKey:
    """Refresh the leader key if it still names this node. The lease counts from the call."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class ReleaseLeaderKey:
    """Delete the leader key if it still names this node."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class HandOverLeaderKey:
    """Switchover: rewrite the leader key to ``candidate`` if it still names this node (PostgreSQL must be
    stopped; its last position is published first)."""

    candidate: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class Promote:
    """Promote the local replica. Only ever emitted after AcquireLeaderKey/RenewLeaderKey in the same
    decision (safety rule 1); the executor arms the fence/watchdog and publishes the epoch first."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class StartPrimary:
    """Start local PostgreSQL as a primary (a new cluster, or one that was a primary). Only with the lease
    held (as Promote)."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class StartReplica:
    """Start local PostgreSQL as a replica of ``leader`` (None: a standby with no upstream yet); already
    running as one: point it at ``leader``. ``remote``: the leader is a standby cluster's source, whose
    slot is ``remote_slot`` (not this member's)."""

    leader: str | None
    conn_url: str | None
    remote: bool = False
    remote_slot: str | None = None
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class CheckReachable:
    """Go on only if ``leader``'s PostgreSQL accepts a TCP connection now. Put before steps that stop or
    replace a data directory: a replica that is only cut off keeps running, and its data stays."""

    leader: str
    conn_url: str
    retry_soon: ClassVar[bool] = False


@dataclass(frozen=True)
class Rewind:
    """pg_rewind the stopped data dir onto ``leader`` and configure it as its standby (even if pg_rewind
    fails: a diverged primary must never start as one again). Not done when pg_rewind fails; the next
    decision then clones afresh (``Memory.rewind_failed``)."""

    leader: str
    conn_url: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class FollowLeader:
    """Point the running replica at ``leader`` (primary_conninfo, slot), reloading PostgreSQL; ``remote``
    as in StartReplica."""

    leader: str
    conn_url: str
    remote: bool = False
    remote_slot: str | None = None
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class CloneStandbyLeader:
    """Bootstrap of a standby cluster: pg_basebackup from its source (``conn_url``) into the missing or
    empty data dir. A long step: the lease is renewed from another thread while it runs."""

    conn_url: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class CloneFrom:
    """Fill the missing or empty data dir with pg_basebackup from ``source``."""

    source: str
    conn_url: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class MoveDataAside:
    """Stop PostgreSQL if a postmaster runs (fast: a replica's, or immediate: ``immediate``), and rename the
    data directory aside (kept, never deleted)."""

    reason: str
    immediate: bool = False
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class RecordRepair:
    """Count a repair of a replica that did not stream (the ladder's next rung comes later). No I/O."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class StopPostgres:
    mode: str = "fast"  # smart | fast | immediate
    reason: str = ""
    within_s: float = 60.0  # then escalated to immediate (then SIGKILL)
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class RestartPostgres:
    reason: str = ""
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class ReloadPostgres:
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class FollowSlots:
    """On a replica: copies of the primary's published physical slots (``positions``: slot name and
    position), advanced to those positions; those of ``members`` are kept ``retain_s`` once no longer
    published, the others dropped at once. ``logical``: the permanent logical slots with their published
    positions (None: not published yet), copied from the primary at ``source`` where missing; copies of
    slots not among them are dropped. See raftpg.ha.slots."""

    positions: tuple[tuple[str, int], ...]
    members: tuple[str, ...] = ()
    retain_s: int = 0
    logical: tuple[tuple[PermanentSlot, int | None], ...] = ()
    source: str | None = None
    retry_soon: ClassVar[bool] = False

    @property
    def published(self) -> tuple[tuple[str, int], ...]:
        """Every position followed (-1: a logical slot not published yet): a change is worth a chore at once."""
        return self.positions + tuple((slot.name, -1 if at is None else at) for slot, at in self.logical)


@dataclass(frozen=True)
class Checkpoint:
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class EnsureSlots:
    """On the primary: a physical replication slot per other data member and the dynamic config's
    permanent slots (``slots``: physical and logical), and none of those raftpg made that are no longer
    wanted."""

    members: tuple[str, ...]
    permanent: tuple[PermanentSlot, ...] = ()
    retain_s: int = 0  # member_slots_ttl: how long the slot of a member whose key is gone is kept
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class SetSynchronousStandbys:
    """Write ``synchronous_standby_names`` and reload (sync mode; see ha/sync.py for the order)."""

    value: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class WriteSyncKey:
    standbys: tuple[str, ...]
    expected_revision: int | None
    quorum: int = 0  # quorum commit: how many voters beyond one a failover must hear from
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class ClearFailoverKey:
    expected_revision: int | None
    reason: str = ""
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class RecordPromotion:
    """Append to the history key (the timeline that ended, where) and publish the new primary's position."""

    reason: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class PublishPosition:
    """Store the primary's WAL position in the status key (the reference for maximum_lag_on_failover),
    with its slots' positions (``slots``, which the replicas copy: raftpg.ha.slots) and, with
    failsafe_mode, the failsafe topology (member, REST API URL: raftpg.ha.failsafe)."""

    lsn: int
    slots: tuple[tuple[str, int], ...] = ()
    failsafe: tuple[tuple[str, str], ...] | None = None
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class AskFailsafe:
    """failsafe_mode, the DCS unreachable: ask every other member of the failsafe topology (``POST
    /failsafe``) to accept this node as the primary. All accept: the lease is extended to the moment the
    requests were sent plus ttl, as by a confirmed renewal (fence and watchdog follow). One refuses or
    does not answer: the action fails and the lease runs out as it would have."""

    members: tuple[tuple[str, str], ...]
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class StoreInitialConfig:
    """The cluster is registered but its dynamic config key is absent: store this node's bootstrap.dcs."""

    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class ApplyClusterConfig:
    """Bring PostgreSQL's files in step with the cluster-wide config in the DCS (parameters, pg_hba,
    pg_ident, recovery_conf; the local file wins), reloading when anything changed."""

    config: DynamicConfig
    retry_soon: ClassVar[bool] = False


@dataclass(frozen=True)
class ClearDetachedMarker:
    """This node's PostgreSQL, left running by an agent stopped while paused, is fenced again (adopted
    and under a renewed lease) or no longer runs: remove ``detached_primary`` from the config key
    (compare-and-set on ``expected_revision``), so the others may promote again when they must."""

    expected_revision: int
    retry_soon: ClassVar[bool] = False


@dataclass(frozen=True)
class Refuse:
    """Stop this agent: continuing would break a safety rule (a foreign data dir). Fatal."""

    reason: str
    retry_soon: ClassVar[bool] = True


@dataclass(frozen=True)
class Fence:
    """Fail closed: stop PostgreSQL immediately (an invariant was violated)."""

    reason: str
    retry_soon: ClassVar[bool] = True


Action = (
    RaceInitialize | Initdb | PostBootstrap | RegisterCluster | CancelInitialize | FinishBootstrap | AdoptExistingData
    | AcquireLeaderKey | RenewLeaderKey | ReleaseLeaderKey | HandOverLeaderKey | Promote | StartPrimary
    | StartReplica | CloneStandbyLeader | CheckReachable | Rewind | FollowLeader | CloneFrom | MoveDataAside | RecordRepair
    | StopPostgres | RestartPostgres | ReloadPostgres | Checkpoint | EnsureSlots | FollowSlots | SetSynchronousStandbys
    | WriteSyncKey | ClearFailoverKey | RecordPromotion | PublishPosition | AskFailsafe | StoreInitialConfig
    | ApplyClusterConfig | ClearDetachedMarker | Refuse | Fence
)


# How soon a node that waits on another member's key looks again (``Decision.poll_s``): the loop's watch
# does not wake on member keys. A quarter second: a new replica that read the cluster a few ms before the
# new primary's member key said "running" lost up to a whole second of its bootstrap at 1 s (bench
# figures of 2026-12-05); a wait that lasts (no eligible member) costs four reads a second.
MEMBER_POLL_S = 0.25
# How soon a replica just started (or re-pointed) looks again, so that its member key says "streaming"
# then: its WAL receiver needs a moment to connect, and the cycle after this one comes at loop_wait.
REPLICA_STARTED_POLL_S = 1.0


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    reason: str
    # Look again after at most this long (None: loop_wait). For a decision that waits on what another
    # member's key will say (a primary that runs, a healthier replica that takes over): the loop's watch
    # wakes on the keys that drive decisions, not on member keys, which change every cycle (Dcs.watch).
    poll_s: float | None = field(default=None, compare=False)

    def has(self, kind: type) -> bool:
        return any(isinstance(a, kind) for a in self.actions)
