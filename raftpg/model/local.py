"""What this node sees of its own PostgreSQL, observed once per HA cycle by ``raftpg.pg``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DataDir(StrEnum):
    MISSING = "missing"        # the directory does not exist
    EMPTY = "empty"            # exists, nothing in it
    INITIALIZED = "initialized"  # has PG_VERSION and a readable control file
    BROKEN = "broken"          # has files but no usable control file (a half-done clone, ...)


@dataclass(frozen=True)
class PeerAnswer:
    """What a member said, asked after this node saw the leader key free: whether its PostgreSQL is in
    recovery, and how far its WAL goes (received or replayed, whichever is further). ``error``: no answer."""

    name: str
    in_recovery: bool | None = None
    lsn: int | None = None
    timeline: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ReplicationRow:
    """One row of pg_stat_replication on a primary."""

    application_name: str
    client_addr: str | None
    state: str
    sync_state: str
    write_lsn: int | None
    flush_lsn: int | None
    replay_lsn: int | None


@dataclass(frozen=True)
class LocalState:
    """This node's PostgreSQL at one moment.

    ``running`` means the postmaster answers queries. ``in_recovery`` is None when not running.
    ``lsn`` is the best known position: pg_current_wal_lsn() on a primary, the larger of the received and
    replayed positions on a replica, the control file's checkpoint location when stopped.
    """

    data_dir: DataDir = DataDir.MISSING
    sysid: str | None = None
    running: bool = False
    in_recovery: bool | None = None
    timeline: int | None = None
    lsn: int | None = None
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    upstream: str | None = None            # application/host the walreceiver streams from
    streaming: bool = False
    pending_restart: bool = False
    server_version: int | None = None
    replication: tuple[ReplicationRow, ...] = ()
    synchronous_standby_names: str = ""
    cluster_state: str | None = None       # pg_controldata "Database cluster state"
    postmaster_pid: int | None = None      # a live postmaster on the data dir (answering or not)
    postmaster_status: str | None = None   # postmaster.pid: starting, ready (a primary), standby, stopping
    standby_signal: bool = False           # standby.signal exists: the server starts (or runs) as a standby
    bootstrap_unfinished: bool = False     # initdb ran but the cluster was never registered in the DCS
    supervised: bool = False               # the running postmaster is under this agent's fencing supervisor
    fresh_copy: bool = False               # backup_label: a base backup (a clone) never started yet
    slots: tuple[tuple[str, int], ...] = ()  # on a primary: the physical slots raftpg made, and restart_lsn

    @property
    def is_primary(self) -> bool:
        return self.running and self.in_recovery is False

    @property
    def is_replica(self) -> bool:
        return self.running and self.in_recovery is True

    @property
    def unobservable(self) -> bool:
        """A postmaster runs but the agent cannot query it (connection slots exhausted, an I/O stall past
        the statement timeout, authentication changed, or still starting up)."""
        return self.postmaster_pid is not None and not self.running

    @property
    def may_accept_writes(self) -> bool:
        """Whether PostgreSQL might be accepting writes right now, as far as the agent can tell: a primary
        it sees, or a postmaster it cannot query that is not known to be a standby or still starting up
        (postmaster.pid says ``ready`` only for a server out of recovery; ``stopping`` with sessions still
        open may write too). Such a server keeps its fence and is demoted on the schedule of a primary
        that cannot renew its lease; it is never treated as "not a primary"."""
        if self.is_primary:
            return True
        if not self.unobservable:
            return False
        if self.postmaster_status in ("starting", "standby"):
            return False
        return not (self.standby_signal and self.postmaster_status != "ready")
