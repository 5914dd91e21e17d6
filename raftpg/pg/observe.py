"""``Observer.observe() -> LocalState``: what this node's PostgreSQL looks like right now.

Never raises for a stopped, crashing, starting or absent server: it returns what it could learn. The data
directory and pg_control are read first (pg_controldata), with ``postmaster.pid`` (its status line tells a
server out of recovery, ``ready``, from a hot standby or one still starting) and ``standby.signal``; then, if
a live postgres process owns the data directory, a superuser connection over the unix socket asks for the
rest. ``running`` means that query worked; a live postmaster that does not answer (starting, a replica not
yet consistent, every connection slot taken, an I/O stall past the statement timeout) shows as
``running=False`` with ``postmaster_pid`` set (``LocalState.unobservable``).

The connection is kept open between observations (and re-opened when it breaks): an agent that is already
connected keeps seeing its server when clients take every connection slot, and a cycle costs no new
backend.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg

from raftpg.model import DataDir, LocalState, ReplicationRow, parse_lsn
from raftpg.pg.bootstrap import bootstrap_unfinished
from raftpg.pg.conf import has_standby_signal
from raftpg.pg.connection import connect
from raftpg.pg.controldata import ControlData, data_dir_state
from raftpg.pg.pidfile import live_postmaster
from raftpg.pg.settings import PgSettings
from raftpg.pg.slots import LOGICAL_RECORD, read_record

log = logging.getLogger(__name__)

_COMMON = """
SELECT pg_is_in_recovery(), current_setting('server_version_num')::int,
       current_setting('synchronous_standby_names'),
       EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart)
"""
_PRIMARY = """
SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn()),
       (SELECT json_object_agg(slot_name, position::text) FROM
          (SELECT slot_name, CASE WHEN slot_type = 'physical' THEN restart_lsn ELSE confirmed_flush_lsn END
                  AS position FROM pg_replication_slots WHERE NOT temporary) AS s
        WHERE position IS NOT NULL)
"""
_REPLICA = """
SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       r.status, r.received_tli, r.sender_host, r.sender_port
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
"""
_QUICK = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver)
"""
_REPLICATION = """
SELECT application_name, client_addr::text, state, sync_state,
       write_lsn::text, flush_lsn::text, replay_lsn::text
FROM pg_stat_replication ORDER BY application_name
"""


class Observer:
    """One node's observations over a connection kept open between calls; thread-safe."""

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self._conn_pid: int | None = None   # the postmaster the connection belongs to
        self._lock = threading.Lock()

    def observe(self, timeout_s: float = 2.0) -> LocalState:
        local = self._observe(timeout_s)
        if local.is_primary or local.data_dir is not DataDir.INITIALIZED:
            return local  # a primary's timeline is exact: pg_walfile_name(pg_current_wal_lsn())
        return replace(local, timeline=_newest(local.timeline, wal_timeline(self.settings.data_dir)))

    def _observe(self, timeout_s: float) -> LocalState:
        state, control = data_dir_state(self.settings)
        local = _from_control(LocalState(data_dir=state), control)
        data_dir = self.settings.data_dir
        local = replace(local, standby_signal=has_standby_signal(data_dir),
                        bootstrap_unfinished=bootstrap_unfinished(data_dir),
                        fresh_copy=os.path.exists(os.path.join(data_dir, "backup_label")))
        postmaster = live_postmaster(data_dir) if control is not None else None
        if postmaster is None:
            self.close()
            return local
        local = replace(local, postmaster_pid=postmaster.pid, postmaster_status=postmaster.status)
        with self._lock:
            for attempt in (1, 2):  # a kept connection may have died with a restart: one fresh try
                try:
                    conn = self._connection(postmaster.pid, timeout_s)
                    return _from_server(local, conn, control, data_dir)
                except psycopg.Error as e:
                    self._drop()
                    if attempt == 2:
                        log.debug("postmaster %d does not answer: %s", postmaster.pid, str(e).strip())
        return local

    def quick(self, timeout_s: float = 0.5) -> LocalState:
        """PostgreSQL's role and streaming state now, for health checks: ``postmaster.pid`` and one short
        query (no pg_controldata). ``running`` False when no postmaster runs or it does not answer."""
        postmaster = live_postmaster(self.settings.data_dir)
        if postmaster is None:
            self.close()
            return LocalState(data_dir=DataDir.INITIALIZED)
        local = LocalState(data_dir=DataDir.INITIALIZED, postmaster_pid=postmaster.pid,
                           postmaster_status=postmaster.status)
        with self._lock:
            for attempt in (1, 2):
                try:
                    row = _one(self._connection(postmaster.pid, timeout_s), _QUICK)
                    break
                except psycopg.Error:
                    self._drop()
                    if attempt == 2:
                        return local
        in_recovery, current, receive, replay, status = row
        receive_lsn, replay_lsn = parse_lsn(receive) if receive else None, parse_lsn(replay) if replay else None
        positions = [p for p in (receive_lsn, replay_lsn) if p is not None]
        lsn = parse_lsn(current) if current else (max(positions) if positions else None)
        return replace(local, running=True, in_recovery=in_recovery, lsn=lsn, receive_lsn=receive_lsn,
                       replay_lsn=replay_lsn, streaming=bool(in_recovery and status == "streaming"))

    @contextmanager
    def session(self, timeout_s: float = 2.0) -> Iterator[psycopg.Connection | None]:
        """The kept connection for a few statements of the caller's own, under this observer's lock: a
        promotion waits on its statements, and a new connection starts a backend (5-15 ms on a busy
        machine). None when no postmaster runs or it does not answer; a statement that fails drops it."""
        postmaster = live_postmaster(self.settings.data_dir)
        with self._lock:
            conn = None
            if postmaster is not None:
                try:
                    conn = self._connection(postmaster.pid, timeout_s)
                except psycopg.Error:
                    self._drop()
            try:
                yield conn
            except psycopg.Error:
                self._drop()
                raise

    def _connection(self, pid: int, timeout_s: float) -> psycopg.Connection:
        if self._conn is not None and (self._conn_pid != pid or self._conn.closed):
            self._drop()
        if self._conn is None:
            self._conn = connect(self.settings, timeout_s)
            self._conn_pid = pid
        return self._conn

    def _drop(self) -> None:
        conn, self._conn, self._conn_pid = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()


def observe(settings: PgSettings, timeout_s: float = 2.0) -> LocalState:
    """One observation on a fresh connection (closed afterwards)."""
    observer = Observer(settings)
    try:
        return observer.observe(timeout_s)
    finally:
        observer.close()


def _from_control(local: LocalState, control: ControlData | None) -> LocalState:
    if control is None:
        return local
    lsn, timeline = control.best_position
    return replace(local, sysid=control.sysid, cluster_state=control.cluster_state, lsn=lsn, timeline=timeline)


_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


def wal_timeline(data_dir: str) -> int | None:
    """The newest timeline this data directory holds WAL of: the highest timeline among the complete WAL
    segment files in pg_wal (``.partial`` files, left on the old timeline at a promotion, are ignored).

    A standby's timeline is the one it replays, which no SQL function tells and pg_control records only
    lazily (at restartpoints): once its wal receiver stops (its primary died), both still say the timeline
    before the last promotion it followed, and a healthy replica would look a whole term behind. The wal
    receiver writes the segments of the timeline it streams, so their names say which timeline the
    replica has WAL of; a diverged former primary that never streamed the new timeline has none of it,
    even when it fetched that timeline's history file before finding it cannot follow."""
    try:
        names = os.listdir(os.path.join(data_dir, "pg_wal"))
    except OSError:
        return None
    timelines = [int(name[:8], 16) for name in names if _SEGMENT.match(name)]
    return max(timelines) if timelines else None


def _newest(*timelines: int | None) -> int | None:
    known = [t for t in timelines if t]
    return max(known) if known else None


def _from_server(local: LocalState, conn: psycopg.Connection, control: ControlData | None,
                 data_dir: str) -> LocalState:
    in_recovery, version, sync_names, pending = _one(conn, _COMMON)
    local = replace(
        local, running=True, in_recovery=in_recovery, server_version=version,
        synchronous_standby_names=sync_names, pending_restart=pending,
        replication=tuple(_replication_row(r) for r in conn.execute(_REPLICATION).fetchall()),
    )
    if not in_recovery:
        lsn, walfile, slots = _one(conn, _PRIMARY)
        # the slots raftpg made (physical: restart_lsn; logical: confirmed_flush_lsn), published for replicas
        made = read_record(data_dir) | read_record(data_dir, LOGICAL_RECORD) if slots else set()
        return replace(local, lsn=parse_lsn(lsn), timeline=int(walfile[:8], 16),
                       slots=tuple(sorted((name, parse_lsn(at)) for name, at in (slots or {}).items() if name in made)))
    receive, replay, status, received_tli, sender_host, sender_port = _one(conn, _REPLICA)
    receive_lsn = parse_lsn(receive) if receive else None
    replay_lsn = parse_lsn(replay) if replay else None
    positions = [p for p in (receive_lsn, replay_lsn) if p is not None]
    timeline = received_tli or (control.best_position[1] if control else None) or local.timeline
    return replace(
        local, receive_lsn=receive_lsn, replay_lsn=replay_lsn,
        lsn=max(positions) if positions else local.lsn, timeline=timeline,
        streaming=status == "streaming",
        upstream=f"{sender_host}:{sender_port}" if sender_host else None,
    )


def _one(conn: psycopg.Connection, sql: str) -> tuple[Any, ...]:
    row = conn.execute(sql).fetchone()
    assert row is not None, sql
    return row


def _replication_row(row: tuple[Any, ...]) -> ReplicationRow:
    name, addr, state, sync_state, write, flush, replay = row
    return ReplicationRow(
        application_name=name, client_addr=addr, state=state, sync_state=sync_state,
        write_lsn=parse_lsn(write) if write else None,
        flush_lsn=parse_lsn(flush) if flush else None,
        replay_lsn=parse_lsn(replay) if replay else None,
    )
