"""The cluster as read from the DCS: frozen snapshots, parsed once per HA cycle.

Pure values: no I/O, no clock. Derived questions (who may be promoted?) are pure functions here so the
HA decision, the REST API and raftpgctl all answer them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from raftpg.model.slots import SLOT_NAME, PermanentSlot
from raftpg.model.tags import Tags
from raftpg.model.values import bounded_int, duration_s, object_or_empty, parse_flag


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    WITNESS = "witness"
    UNINITIALIZED = "uninitialized"


@dataclass(frozen=True)
class Member:
    """One node's self-description, published in ``members/<name>`` with a TTL.

    ``lsn`` is the member's best WAL position: the write position on a primary, the larger of received
    and replayed on a replica. ``valid`` is False when the stored document could not be parsed; such a
    member is never promoted and never named a synchronous standby.
    """

    name: str
    role: str = Role.UNINITIALIZED
    state: str = "stopped"
    api_url: str | None = None
    conn_url: str | None = None
    timeline: int | None = None
    lsn: int | None = None
    replay_lsn: int | None = None
    receive_lsn: int | None = None
    sysid: str | None = None
    tags: Tags = field(default_factory=Tags)
    witness: bool = False
    pending_restart: bool = False
    server_version: int | None = None
    raft_addr: str | None = None
    version: str | None = None
    progress: int | None = None           # percent done while the state is "creating replica"
    valid: bool = True
    revision: int = 0

    @property
    def is_running(self) -> bool:
        return self.state in ("running", "streaming")

    @property
    def host(self) -> str | None:
        if not self.conn_url:
            return None
        rest = self.conn_url.split("://", 1)[-1].split("/", 1)[0]
        return rest.rsplit("@", 1)[-1]


@dataclass(frozen=True)
class Leader:
    """The leader key: who holds the primary lease, at which store revision (the CAS guard)."""

    name: str
    revision: int


@dataclass(frozen=True)
class Failover:
    """A requested switchover (``leader`` set) or failover (only ``candidate``), maybe scheduled.

    ``scheduled_at`` is wall-clock epoch seconds: a human asked for a time of day.
    """

    leader: str | None = None
    candidate: str | None = None
    scheduled_at: float | None = None
    revision: int = 0


@dataclass(frozen=True)
class SyncState:
    """Who the primary has confirmed as synchronous standbys. Only these may be promoted in sync mode.

    Quorum commit (``synchronous_mode: quorum``): ``sync_standby`` are the *voters* and ``quorum`` how many
    of them beyond one a failover candidate must hear from (Patroni's ``quorum`` field): any
    ``quorum + 1`` voters hold every acknowledged commit between them (raftpg.ha.quorum). Synchronous mode
    reads a key with a quorum above 0 as naming its leader alone (the voters one by one hold nothing)."""

    leader: str | None = None
    sync_standby: tuple[str, ...] = ()
    revision: int = 0
    quorum: int = 0

    def names(self, name: str) -> bool:
        return name in self.sync_standby


@dataclass(frozen=True)
class StandbyCluster:
    """``standby_cluster`` in the dynamic config: this whole cluster replicates from a remote primary (or
    another cluster's standby leader) at ``host:port``; its leader is a *standby leader* that never promotes
    while this is set, and the other members stream from it."""

    host: str
    port: int = 5432
    primary_slot_name: str | None = None

    REMOTE: ClassVar[str] = "standby_cluster"  # what the standby leader "follows" (Memory.following)

    @property
    def conn_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{host}:{self.port}/postgres"

    @classmethod
    def parse(cls, raw: Any) -> StandbyCluster | None:
        """Lenient (the document was validated before it was stored): None unless it names a host."""
        if not isinstance(raw, dict) or not isinstance(raw.get("host"), str) or not raw["host"].strip():
            return None
        port = bounded_int(raw.get("port", 5432), 1, 65535)
        slot = raw.get("primary_slot_name")
        return cls(raw["host"].strip(), 5432 if port is None else port,
                   slot if isinstance(slot, str) and SLOT_NAME.fullmatch(slot) else None)


@dataclass(frozen=True)
class HistoryEntry:
    timeline: int
    lsn: int
    reason: str
    timestamp: float
    new_leader: str | None = None


@dataclass(frozen=True)
class DynamicConfig:
    """The cluster-wide settings stored in the ``config`` key (Patroni's ``bootstrap.dcs`` shape).

    ``raw`` keeps the whole document, so keys raftpg does not interpret survive an edit. ``BOUNDS`` are
    the accepted ranges of the numbers, shared with the validator of ``bootstrap.dcs`` and ``PATCH
    /config`` (raftpg.config.dynamic). Upper bounds: a day for durations (the embedded store's and
    Consul's longest lease; a primary that waits longer for anything is down), the int64 range for
    bytes; past them values are absurd, and would overflow float arithmetic on deadlines.
    """

    ttl_s: int = 30
    loop_wait_s: int = 10
    retry_timeout_s: int = 10
    maximum_lag_on_failover_bytes: int = 1048576
    primary_start_timeout_s: int = 300
    synchronous_mode: bool = False
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    quorum_commit: bool = False  # synchronous_mode: quorum (then synchronous_mode is True as well)
    pause: bool = False
    use_pg_rewind: bool = False
    use_slots: bool = True
    parameters: tuple[tuple[str, str], ...] = ()
    permanent_slots: tuple[PermanentSlot, ...] = ()
    # how long the primary keeps the slot of a member whose key is gone (Patroni 4's default: 30 min)
    member_slots_ttl_s: int = 1800
    # the member whose agent stopped while paused and left its PostgreSQL running, unfenced, as a primary
    # (``detached_primary``): nobody else promotes until its agent returns and adopts it, or an operator
    # removes the key once that server is stopped
    detached_primary: str | None = None
    # Patroni's failsafe_mode: a primary that cannot reach the DCS keeps running while every member of the
    # published failsafe topology accepts it as the primary (raftpg.ha.failsafe; refused on the embedded Raft)
    failsafe_mode: bool = False
    # standby_cluster: the leader replicates from a remote primary instead of being one (None: a normal cluster)
    standby_cluster: StandbyCluster | None = None
    raw: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DynamicConfig:
        """Lenient: a bad or out-of-bounds value falls back to the default (validation happens before a
        write, and again when the DCS is read). Never raises."""
        raw = raw if isinstance(raw, dict) else {}
        pg = object_or_empty(raw.get("postgresql"))
        params = object_or_empty(pg.get("parameters"))
        d = cls()

        def num(key: str, default: int) -> int:
            low, high = DYNAMIC_BOUNDS[key]
            value = bounded_int(raw.get(key, default), low, high)
            return default if value is None else value

        def flag(value: Any, default: bool) -> bool:
            parsed = parse_flag(value)
            return default if parsed is None else parsed

        return cls(
            ttl_s=num("ttl", d.ttl_s),
            loop_wait_s=num("loop_wait", d.loop_wait_s),
            retry_timeout_s=num("retry_timeout", d.retry_timeout_s),
            maximum_lag_on_failover_bytes=num("maximum_lag_on_failover", d.maximum_lag_on_failover_bytes),
            primary_start_timeout_s=num("primary_start_timeout", d.primary_start_timeout_s),
            synchronous_mode=_is_quorum(raw.get("synchronous_mode")) or flag(raw.get("synchronous_mode"), False),
            quorum_commit=_is_quorum(raw.get("synchronous_mode")),
            synchronous_mode_strict=flag(raw.get("synchronous_mode_strict"), False),
            synchronous_node_count=num("synchronous_node_count", 1),
            pause=flag(raw.get("pause"), False),
            use_pg_rewind=flag(pg.get("use_pg_rewind"), False),
            use_slots=flag(pg.get("use_slots"), True),
            parameters=tuple(sorted((str(k), _guc_text(v)) for k, v in params.items())),
            permanent_slots=tuple(slot for name, entry in sorted(_permanent_slots(raw).items(),
                                                                  key=lambda item: str(item[0]))
                                  if (slot := PermanentSlot.parse(name, entry)) is not None),
            member_slots_ttl_s=_duration(raw.get("member_slots_ttl"), "member_slots_ttl", d.member_slots_ttl_s),
            detached_primary=_member_name(raw.get("detached_primary")),
            failsafe_mode=flag(raw.get("failsafe_mode"), False),
            standby_cluster=StandbyCluster.parse(raw.get("standby_cluster")),
            raw=tuple(sorted(raw.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


DAY_S = 24 * 3600
INT64_MAX = 2**63 - 1
DYNAMIC_BOUNDS: dict[str, tuple[int, int]] = {
    # key in the document: (lowest, highest) accepted value
    "ttl": (4, DAY_S),
    "loop_wait": (1, DAY_S),
    "retry_timeout": (1, DAY_S),
    "maximum_lag_on_failover": (0, INT64_MAX),
    "primary_start_timeout": (0, DAY_S),
    "primary_stop_timeout": (0, DAY_S),
    "synchronous_node_count": (1, 1024),
    "member_slots_ttl": (0, 365 * DAY_S),  # not a lease: retention of WAL for an absent member
}


def _duration(value: Any, key: str, default: int) -> int:
    if value is None:
        return default
    low, high = DYNAMIC_BOUNDS[key]
    parsed = duration_s(value, low, high)
    return default if parsed is None else parsed


def _permanent_slots(raw: dict[str, Any]) -> dict[str, Any]:
    """The permanent slots under whichever of Patroni's names the document uses (the validator stores
    ``slots``; a document written by Patroni or by hand may use another)."""
    for key in ("slots", "permanent_slots", "permanent_replication_slots"):
        if raw.get(key):
            return object_or_empty(raw[key])
    return {}


def _is_quorum(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "quorum"


def _member_name(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


def _guc_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@dataclass(frozen=True)
class ClusterView:
    """Everything under ``<namespace><scope>/`` at one store revision."""

    initialize: str | None = None
    config: DynamicConfig = field(default_factory=DynamicConfig)
    config_revision: int | None = None
    leader: Leader | None = None
    members: tuple[Member, ...] = ()
    failover: Failover | None = None
    sync: SyncState | None = None
    history: tuple[HistoryEntry, ...] = ()
    last_lsn: int | None = None
    # the primary's replication slots and their positions (the status key's ``slots``), copied by replicas
    slot_positions: tuple[tuple[str, int], ...] = ()
    # the failsafe topology the primary published in the status key (``failsafe``: member -> api_url), the
    # members it must ask while it cannot reach the DCS; None: not published (failsafe_mode off)
    failsafe: tuple[tuple[str, str], ...] | None = None
    revision: int = 0
    # unreadable documents under the scope, one line each ("config: ttl: ...; using ..."): they were
    # read as an invalid member, an absent key or the last good value (raftpg.dcs.codec)
    problems: tuple[str, ...] = ()

    def member(self, name: str | None) -> Member | None:
        if name is None:
            return None
        return next((m for m in self.members if m.name == name), None)

    @property
    def leader_member(self) -> Member | None:
        return self.member(self.leader.name) if self.leader else None

    def clone_source(self, me: str, from_leader: bool = False) -> Member | None:
        """Whom ``me`` clones from: the most advanced running ``clonefrom`` member (Patroni's rule), else
        the running leader; only the leader if ``from_leader``. None if there is no such member."""
        tagged = [] if from_leader else [m for m in self.members if m.tags.clonefrom and m.is_running
                                         and m.name != me and m.conn_url and not m.witness]
        if tagged:
            return sorted(tagged, key=lambda m: -(m.lsn or 0))[0]
        leader = self.leader_member
        return leader if leader and leader.conn_url and leader.name != me and leader.is_running else None

    @property
    def paused(self) -> bool:
        return self.config.pause

    @property
    def data_members(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.witness)

    def ineligibility(self, member: Member) -> str | None:
        """Why ``member`` may not be promoted now (safety rule 4), or None if it may.

        Eligible: a running, valid data member of this cluster without nofailover, within
        maximum_lag_on_failover of the last known primary position, and, in synchronous mode, named
        in the sync key. With quorum commit the sync key does not say who may be promoted: the failover
        race counts the voters' fresh answers instead (raftpg.ha.quorum.votes).
        """
        if not member.valid:
            return f"{member.name} has an unreadable member key"
        if member.witness:
            return f"{member.name} is a witness"
        if member.tags.nofailover:
            return f"{member.name} has the nofailover tag"
        if not member.is_running:
            return f"{member.name} is not running (state {member.state})"
        if self.initialize and member.sysid and member.sysid != self.initialize:
            return f"{member.name} belongs to another cluster (system identifier {member.sysid})"
        if member.lsn is None:
            return f"{member.name} reports no WAL position"
        timeline = self.timeline
        if timeline is not None and (member.timeline is None or member.timeline < timeline):
            # Positions on different timelines are not comparable: a member still on an older timeline
            # (an old primary with an unreplicated tail, a replica that never followed the last promotion)
            # may report a higher LSN, yet lacks the whole term the newer timeline acknowledged.
            return (f"{member.name} is on timeline {member.timeline}, behind the cluster's timeline {timeline} "
                    "(its WAL position is not comparable)")
        reference = self.last_lsn
        if reference is not None:
            lag = reference - member.lsn
            if lag > self.config.maximum_lag_on_failover_bytes:
                return (
                    f"{member.name} lags {lag} bytes behind the last primary position "
                    f"(maximum_lag_on_failover is {self.config.maximum_lag_on_failover_bytes})"
                )
        if self.config.synchronous_mode and not self.config.quorum_commit and self.config.standby_cluster is None:
            if self.sync is None or member.name not in self.sync.sync_standby:
                return f"{member.name} is not a synchronous standby"
        return None

    @property
    def timeline(self) -> int | None:
        """The cluster's latest timeline as far as the DCS knows it: one past the newest ``history`` row
        (each row is written by a promotion and names the timeline it ended). None before any promotion."""
        if not self.history:
            return None
        return max(entry.timeline for entry in self.history) + 1

    def eligibility_view(self) -> ClusterView:
        """The view the failover race judges eligibility on, in synchronous mode as Patroni does:

        - the sync key's leader may take over as well as its synchronous standbys: it is the primary that
          acknowledged every commit (Patroni's rule too). Without this, a primary
          that ran with no synchronous standby (non-strict mode) and restarted could never become primary
          again, nor could anyone else;
        - a sync key naming no leader (absent: synchronous mode was just turned on, or while paused) restricts
          no one: no commit was ever acknowledged synchronously. Otherwise nobody
          could ever be promoted.

        Safe because the key names a primary before that primary waits for any standby (``plan_sync``
        writes it first) and before it promotes (``_promote``), so the key's leader is never older than the
        last promotion or the first synchronous commit."""
        sync = self.sync
        if not self.config.synchronous_mode:
            return self
        if sync is None or not sync.leader:
            return replace(self, config=replace(self.config, synchronous_mode=False, quorum_commit=False))
        if self.config.quorum_commit:
            return self
        if sync.quorum > 0:
            # a key written under quorum commit: no voter alone holds every commit, only the leader does
            return replace(self, sync=replace(sync, sync_standby=(sync.leader,)))
        if sync.leader in sync.sync_standby:
            return self
        return replace(self, sync=replace(sync, sync_standby=tuple(sorted((*sync.sync_standby, sync.leader)))))

    def failover_candidates(self, exclude: str | None = None) -> tuple[Member, ...]:
        """Eligible members, healthiest first: newest timeline, highest WAL position on it, then
        failover_priority, then name."""
        eligible = [
            m for m in self.members if m.name != exclude and self.ineligibility(m) is None
        ]
        eligible.sort(key=health_key)
        return tuple(eligible)


def health_key(member: Member) -> tuple[int, int, int, str]:
    """Sort key, healthiest first: timeline, then WAL position (compared only within a timeline), then
    failover_priority, then name (a deterministic tie-break every node computes alike)."""
    return (-(member.timeline or 0), -(member.lsn or 0), -member.tags.failover_priority, member.name)
