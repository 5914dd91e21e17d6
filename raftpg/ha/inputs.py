"""Everything ``decide`` looks at, as frozen values. Built by the loop once per cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftpg.model import ClusterView, DataDir, LocalState, Member, PeerAnswer, Tags
from raftpg.model.status import node_role


@dataclass(frozen=True)
class Me:
    """This node's identity and static settings (from the config file)."""

    name: str
    witness: bool = False
    tags: Tags = field(default_factory=Tags)
    api_url: str | None = None
    conn_url: str | None = None
    raft_addr: str | None = None
    clone_without_leader: bool = False    # a replica method marked no_leader (e.g. a restore from backup)
    failsafe_refusal: str | None = None   # why this node's DCS refuses failsafe_mode (the embedded Raft's)


@dataclass(frozen=True)
class LeaseState:
    """This node's own account of the leader lease (safety rule 2).

    ``deadline`` is the monotonic time at which the lease could expire anywhere: the moment the last
    *confirmed* acquire/renew was sent, plus the TTL. None: this node holds no lease.
    """

    deadline: float | None = None

    def valid_for(self, now: float) -> float:
        return 0.0 if self.deadline is None else max(0.0, self.deadline - now)

    def budget(self, cap_s: float, now: float, demote_margin_s: float, floor_s: float = 0.2) -> float:
        """How long a step started at ``now`` may take: at most ``cap_s``, and never past the moment this
        node must demote (``demote_margin_s`` before the lease ends), but at least ``floor_s``. The one
        formula for every wait under a lease (DCS calls, the loop's sleep, the failsafe round)."""
        if self.deadline is None:
            return cap_s
        return max(floor_s, min(cap_s, self.deadline - demote_margin_s - now))


@dataclass(frozen=True)
class Memory:
    """What the loop remembers between cycles (kept minimal; everything else is observed afresh)."""

    pg_down_since: float | None = None      # monotonic time PostgreSQL was first seen down while leader
    following: str | None = None            # the leader this replica was last pointed at
    leader_since: float | None = None       # monotonic time this replica first saw the key name it
    stalled_since: float | None = None      # monotonic time this replica, pointed at the leader, stopped streaming
    stall_repairs: int = 0                  # repairs carried out since it stopped streaming (rewind, re-clone)
    rewind_failed: bool = False             # pg_rewind failed on this data dir: the next rejoin clones afresh
    bootstrap_failed: bool = False          # this node's last bootstrap attempt failed: give the race back
    start_failures: int = 0                 # consecutive cycles in which starting PostgreSQL failed
    sync_catchup_lsn: int | None = None     # strict sync: my position when a sync standby was first seen lost
    failed_in_a_row: int = 0                # consecutive cycles whose decision failed (paces the retries)
    # the slot copies this replica last brought in step (positions, monotonic time): done again only when
    # the primary publishes other positions, or a minute later (an idle cluster costs no queries)
    slots_followed: tuple[tuple[tuple[str, int], ...], float] | None = None
    # the primary's slots as last ensured (the action, monotonic time): ensured again only when the wanted
    # slots change, one of them is missing from what PostgreSQL shows, or a minute later (the check opens a
    # connection of its own: an idle primary made one a second)
    slots_ensured: tuple[Any, float] | None = None
    # failsafe_mode: the topology (member, REST API URL) last read from the status key while it was on;
    # a primary that cannot reach the DCS asks these members. None: failsafe_mode off (or never read)
    failsafe_members: tuple[tuple[str, str], ...] | None = None
    # a primary's synchronous_standby_names as first seen (value, monotonic time) and its WAL position once
    # that value had been in force for SETTLED_S: every commit acknowledged under an older value lies
    # below it (quorum commit's safe_lsn). None: not a primary
    standby_names_seen: tuple[str, float, int | None] | None = None

    @property
    def safe_lsn(self) -> int | None:
        return self.standby_names_seen[2] if self.standby_names_seen else None


@dataclass(frozen=True)
class FailsafeSeen:
    """What this node has heard of failsafe mode outside the DCS (monotonic times)."""

    asked_by: str | None = None             # the primary that last asked to be kept (POST /failsafe)
    asked_at: float | None = None           # when that request came
    agent_started: float = 0.0              # requests before this moment were not heard


REINITIALIZE_FROM_LEADER = "reinitialize-from-leader"  # an operator request: re-clone from the leader itself


@dataclass(frozen=True)
class Inputs:
    view: ClusterView | None                # None: the DCS could not be read this cycle
    local: LocalState | None                # None on a witness
    me: Me
    lease: LeaseState
    memory: Memory
    now: float                              # monotonic
    now_wall: float                         # epoch seconds: only for scheduled switchovers (a human's time)
    demote_margin_s: float = 1.0            # stop writes this long before the lease could expire
    pending: frozenset[str] = frozenset()   # operator requests: restart, reload, reinitialize[-from-leader]
    failsafe: FailsafeSeen = field(default_factory=FailsafeSeen)
    # quorum commit: the members' positions, asked after this cycle's read found the leader key free
    # (None: not asked; raftpg.ha.quorum.vote_problem)
    peers: tuple[PeerAnswer, ...] | None = None

    def me_as_member(self) -> Member:
        """This node as a failover candidate, with its *current* WAL position rather than the published one."""
        local = self.local or LocalState()
        published = self.view.member(self.me.name) if self.view else None
        return Member(
            name=self.me.name, role=node_role(self.local, self.me.witness),
            state="running" if local.running else "stopped", conn_url=self.me.conn_url,
            timeline=local.timeline, lsn=local.lsn, sysid=local.sysid, tags=self.me.tags,
            witness=self.me.witness, revision=published.revision if published else 0,
        )

    @property
    def data_was_primary(self) -> bool:
        """The data dir was last a primary (crashed or shut down), so rejoining may need a rewind. Not a
        fresh copy: a base backup of a primary says "in production" until its first start."""
        local = self.local
        return bool(local and local.data_dir == DataDir.INITIALIZED and not local.fresh_copy
                    and local.cluster_state in ("in production", "shut down"))
