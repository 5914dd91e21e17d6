"""The cluster as read from the DCS: frozen snapshots, parsed once per HA cycle.

Pure values: no I/O, no clock. Derived questions (who may be promoted?) are pure functions here so the
HA decision, the REST API and raftpgctl all answer them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    WITNESS = "witness"
    UNINITIALIZED = "uninitialized"


@dataclass(frozen=True)
class Tags:
    nofailover: bool = False
    failover_priority: int = 1
    noloadbalance: bool = False
    clonefrom: bool = False
    nosync: bool = False

    @classmethod
    def from_dict(cls, raw: Any) -> Tags:
        if not isinstance(raw, dict):
            return cls()
        try:
            priority = int(raw.get("failover_priority", 1))
        except (TypeError, ValueError):
            priority = 1
        nofailover = bool(raw.get("nofailover", False)) or priority <= 0
        return cls(
            nofailover=nofailover,
            failover_priority=priority,
            noloadbalance=bool(raw.get("noloadbalance", False)),
            clonefrom=bool(raw.get("clonefrom", False)),
            nosync=bool(raw.get("nosync", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "nofailover": self.nofailover,
            "failover_priority": self.failover_priority,
            "noloadbalance": self.noloadbalance,
            "clonefrom": self.clonefrom,
            "nosync": self.nosync,
        }


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
    """Who the primary has confirmed as synchronous standbys. Only these may be promoted in sync mode."""

    leader: str | None = None
    sync_standby: tuple[str, ...] = ()
    revision: int = 0

    def names(self, name: str) -> bool:
        return name in self.sync_standby


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

    ``raw`` keeps the whole document, so keys raftpg does not interpret survive an edit.
    """

    ttl_s: int = 30
    loop_wait_s: int = 10
    retry_timeout_s: int = 10
    maximum_lag_on_failover_bytes: int = 1048576
    primary_start_timeout_s: int = 300
    synchronous_mode: bool = False
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    pause: bool = False
    use_pg_rewind: bool = False
    use_slots: bool = True
    parameters: tuple[tuple[str, str], ...] = ()
    raw: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DynamicConfig:
        """Lenient: a bad value falls back to the default (validation happens before a write)."""
        raw = raw if isinstance(raw, dict) else {}
        pg = raw.get("postgresql") if isinstance(raw.get("postgresql"), dict) else {}
        params = pg.get("parameters") if isinstance(pg.get("parameters"), dict) else {}
        d = cls()

        def num(key: str, default: int) -> int:
            value = raw.get(key, default)
            if isinstance(value, bool):
                return default
            try:
                return int(value)
            except (TypeError, ValueError):
                return default

        def flag(value: Any, default: bool) -> bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("on", "true", "yes", "1"):
                return True
            if isinstance(value, str) and value.lower() in ("off", "false", "no", "0"):
                return False
            return default

        return cls(
            ttl_s=num("ttl", d.ttl_s),
            loop_wait_s=num("loop_wait", d.loop_wait_s),
            retry_timeout_s=num("retry_timeout", d.retry_timeout_s),
            maximum_lag_on_failover_bytes=num("maximum_lag_on_failover", d.maximum_lag_on_failover_bytes),
            primary_start_timeout_s=num("primary_start_timeout", d.primary_start_timeout_s),
            synchronous_mode=flag(raw.get("synchronous_mode"), False),
            synchronous_mode_strict=flag(raw.get("synchronous_mode_strict"), False),
            synchronous_node_count=max(1, num("synchronous_node_count", 1)),
            pause=flag(raw.get("pause"), False),
            use_pg_rewind=flag(pg.get("use_pg_rewind"), False),
            use_slots=flag(pg.get("use_slots"), True),
            parameters=tuple(sorted((str(k), _guc_text(v)) for k, v in params.items())),
            raw=tuple(sorted(raw.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


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
    revision: int = 0

    def member(self, name: str | None) -> Member | None:
        if name is None:
            return None
        return next((m for m in self.members if m.name == name), None)

    @property
    def leader_member(self) -> Member | None:
        return self.member(self.leader.name) if self.leader else None

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
        in the sync key.
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
        reference = self.last_lsn
        if reference is not None:
            lag = reference - member.lsn
            if lag > self.config.maximum_lag_on_failover_bytes:
                return (
                    f"{member.name} lags {lag} bytes behind the last primary position "
                    f"(maximum_lag_on_failover is {self.config.maximum_lag_on_failover_bytes})"
                )
        if self.config.synchronous_mode:
            if self.sync is None or member.name not in self.sync.sync_standby:
                return f"{member.name} is not a synchronous standby"
        return None

    def eligibility_view(self) -> ClusterView:
        """The view the failover race judges eligibility on, in synchronous mode as Patroni does:

        - the sync key's leader may take over as well as its synchronous standbys: it is the primary that
          acknowledged every commit (``SyncState.matches(name, check_leader=True)``). Without this, a primary
          that ran with no synchronous standby (non-strict mode) and restarted could never become primary
          again, nor could anyone else;
        - a sync key naming no leader (absent: synchronous mode was just turned on, or while paused) restricts
          no one: no commit was ever acknowledged synchronously (``not sync.is_empty``). Otherwise nobody
          could ever be promoted.

        Safe because the key names a primary before that primary waits for any standby (``plan_sync``
        writes it first) and before it promotes (``_promote``), so the key's leader is never older than the
        last promotion or the first synchronous commit."""
        sync = self.sync
        if not self.config.synchronous_mode:
            return self
        if sync is None or not sync.leader:
            return replace(self, config=replace(self.config, synchronous_mode=False))
        if sync.leader in sync.sync_standby:
            return self
        return replace(self, sync=replace(sync, sync_standby=tuple(sorted((*sync.sync_standby, sync.leader)))))

    def failover_candidates(self, exclude: str | None = None) -> tuple[Member, ...]:
        """Eligible members, healthiest first: highest WAL position, then failover_priority, then name."""
        eligible = [
            m for m in self.members if m.name != exclude and self.ineligibility(m) is None
        ]
        eligible.sort(key=lambda m: (-(m.lsn or 0), -m.tags.failover_priority, m.name))
        return tuple(eligible)
