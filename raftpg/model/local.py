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
    postmaster_pid: int | None = None

    @property
    def is_primary(self) -> bool:
        return self.running and self.in_recovery is False

    @property
    def is_replica(self) -> bool:
        return self.running and self.in_recovery is True
