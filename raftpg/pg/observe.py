"""``observe(settings) -> LocalState``: what this node's PostgreSQL looks like right now.

Never raises for a stopped, crashing, starting or absent server: it returns what it could learn. The data
directory and pg_control are read first (pg_controldata); then, if ``postmaster.pid`` names a live postgres
process, one superuser connection over the unix socket asks for the rest. ``running`` means that connection
worked; a live postmaster that does not accept connections yet (starting, or a replica not yet consistent)
shows as ``running=False`` with ``postmaster_pid`` set.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import psycopg

from raftpg.model import LocalState, ReplicationRow, parse_lsn
from raftpg.pg.connection import connect
from raftpg.pg.controldata import ControlData, data_dir_state
from raftpg.pg.pidfile import live_postmaster
from raftpg.pg.settings import PgSettings

log = logging.getLogger(__name__)

_COMMON = """
SELECT pg_is_in_recovery(), current_setting('server_version_num')::int,
       current_setting('synchronous_standby_names'),
       EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart)
"""
_PRIMARY = "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
_REPLICA = """
SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       r.status, r.received_tli, r.sender_host, r.sender_port
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
"""
_REPLICATION = """
SELECT application_name, client_addr::text, state, sync_state,
       write_lsn::text, flush_lsn::text, replay_lsn::text
FROM pg_stat_replication ORDER BY application_name
"""


def observe(settings: PgSettings, timeout_s: float = 2.0) -> LocalState:
    state, control = data_dir_state(settings)
    local = _from_control(LocalState(data_dir=state), control)
    postmaster = live_postmaster(settings.data_dir) if control is not None else None
    if postmaster is None:
        return local
    local = replace(local, postmaster_pid=postmaster.pid)
    try:
        with connect(settings, timeout_s) as conn:
            return _from_server(local, conn, control)
    except psycopg.Error as e:
        log.debug("postmaster %d does not answer: %s", postmaster.pid, str(e).strip())
        return local


def _from_control(local: LocalState, control: ControlData | None) -> LocalState:
    if control is None:
        return local
    lsn, timeline = control.best_position
    return replace(local, sysid=control.sysid, cluster_state=control.cluster_state, lsn=lsn, timeline=timeline)


def _from_server(local: LocalState, conn: psycopg.Connection, control: ControlData | None) -> LocalState:
    in_recovery, version, sync_names, pending = _one(conn, _COMMON)
    local = replace(
        local, running=True, in_recovery=in_recovery, server_version=version,
        synchronous_standby_names=sync_names, pending_restart=pending,
        replication=tuple(_replication_row(r) for r in conn.execute(_REPLICATION).fetchall()),
    )
    if not in_recovery:
        lsn, walfile = _one(conn, _PRIMARY)
        return replace(local, lsn=parse_lsn(lsn), timeline=int(walfile[:8], 16))
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
