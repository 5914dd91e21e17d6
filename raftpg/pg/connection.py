"""Connecting to PostgreSQL: the agent's own superuser connection and conninfo strings for other members.

A conninfo for another member is always built from the host and port of its ``conn_url`` (which comes
from the DCS) plus raftpg's own parameters: see ``server_address``.

The agent connects over the unix socket as the superuser, with the pgpass file, a connect timeout and a
statement timeout, in autocommit mode, one short-lived connection per operation (thread-safe by construction;
a unix-socket connection costs a few milliseconds, far below one HA cycle).
"""

from __future__ import annotations

import math
import socket
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from raftpg.clock import Clock
from raftpg.pg.pidfile import read_pidfile
from raftpg.pg.settings import Credentials, PgSettings
from raftpg.pg.tools import PgError, libpq_has_require_auth


def conninfo_for(
    host: str, port: int, user: str, *, application_name: str | None = None,
    passfile: str | None = None, dbname: str | None = None, **extra: Any,
) -> str:
    """A libpq key=value conninfo (quoted as libpq needs) for another member's PostgreSQL."""
    params = dict(host=host, port=port, user=user, application_name=application_name,
                  passfile=passfile, dbname=dbname, **extra)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def server_address(conninfo: str) -> tuple[str, int]:
    """The one TCP ``(host, port)`` a member's conninfo (URL or key=value) names; PgError for anything else.

    A member's ``conn_url`` comes from the DCS, so whoever can write the DCS chooses it. Only its host and
    port are ever used: options such as ``passfile``, ``sslmode``, ``options`` or a second host would let
    that writer choose which secrets are sent, and where. A unix-socket "host" is refused too: another
    member is never on this machine's sockets.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as e:
        raise PgError(f"not a valid conninfo: {str(e).strip()}") from None
    host = str(params.get("host") or "").strip()
    port_text = str(params.get("port") or "5432").strip()
    if not host or "," in host or host.startswith(("/", "@")) or any(c.isspace() or ord(c) < 0x20 for c in host):
        raise PgError(f"a member's address must be one TCP host name or IP address, got host={host!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PgError(f"a member's port must be one number in 1..65535, got port={port_text!r}")
    return host, int(port_text)


def accepts_connections(conninfo: str, timeout_s: float = 2.0) -> bool:
    """True if the server ``conninfo`` names accepts a TCP connection now (a cheap probe)."""
    try:
        host, port = server_address(conninfo)
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except (OSError, ValueError, PgError):
        return False


def member_conninfo(conninfo: str, **params: Any) -> str:
    """A conninfo for the server ``conninfo`` names, built from its host and port only, plus ``params``
    (user, passfile, application_name, ...; None values left out). See :func:`server_address`."""
    host, port = server_address(conninfo)
    return make_conninfo("", host=host, port=port, **{k: v for k, v in params.items() if v is not None})


def with_defaults(conninfo: str, **params: Any) -> str:
    """Same as :func:`member_conninfo` (the name is older: every parameter but host and port is ours)."""
    return member_conninfo(conninfo, **params)


def add_params(conninfo: str, **params: Any) -> str:
    """``conninfo`` (one raftpg built) with ``params`` set; unchanged when there are none."""
    if not params:
        return conninfo
    try:
        current = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as e:
        raise PgError(f"not a valid conninfo: {e}") from None
    return make_conninfo("", **{**current, **params})


def scram_params(settings: PgSettings, cred: Credentials) -> dict[str, str]:
    """``{"require_auth": "scram-sha-256"}`` where it is safe and possible, else ``{}``.

    Possible: the libpq of ``settings.bin_dir``'s programs is 16 or newer (PostgreSQL 15's is not: then
    the client cannot refuse cleartext or md5 and the password's safety rests on the host and port coming
    from raftpg's own keys). Safe: ``cred`` has a password and the generated pg_hba is in use, whose TCP
    lines all ask for scram-sha-256; a configured pg_hba may use other methods.
    """
    if settings.pg_hba or not cred.password or not libpq_has_require_auth(settings.bin_dir):
        return {}
    return {"require_auth": "scram-sha-256"}


def connect(settings: PgSettings, timeout_s: float = 5.0, dbname: str = "postgres") -> psycopg.Connection:
    """Superuser connection over the unix socket the running postmaster announced (falls back to settings)."""
    running = read_pidfile(settings.data_dir)
    host = (running.socket_dir if running else None) or settings.socket_dir
    port = (running.port if running else None) or settings.port
    return psycopg.connect(
        host=host, port=port, dbname=dbname, user=settings.superuser.username,
        application_name=settings.application_name, passfile=settings.pgpass,
        connect_timeout=max(2, math.ceil(timeout_s)), autocommit=True, client_encoding="UTF8",
        options=f"-c statement_timeout={max(1, int(timeout_s * 1000))}",
    )


def query(settings: PgSettings, sql: Any, params: Any = None, timeout_s: float = 5.0,
          dbname: str = "postgres") -> list[tuple[Any, ...]]:
    """Run one statement as the superuser; return its rows ([] for statements without a result).

    Raises PgError (with the server's message) on any connection or SQL error, or after ``timeout_s``.
    """
    try:
        with connect(settings, timeout_s, dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
    except psycopg.Error as e:
        raise PgError(f"query failed: {str(e).strip()}") from None


def promote(settings: PgSettings, clock: Clock, timeout_s: float, poll_s: float = 0.005,
            again_s: float = 0.01, conn: psycopg.Connection | None = None) -> None:
    """Promote the standby and return once it accepts writes. ``pg_promote(true)`` looks every 100 ms
    whether recovery has ended, about 50 ms after the fact on average, all of it write downtime in a
    switchover: ask without waiting, then look every ``poll_s`` on the same connection (``conn``, an open
    one the caller keeps, saves starting a backend; one that turns out broken is replaced once).

    Ask again every ``again_s`` while recovery goes on. PostgreSQL 15 notices a request in its streaming
    state, then sleeps out what is left of ``wal_retrieve_retry_interval`` (5 s by default) since the stream
    last failed, and only a new request wakes it (tests/integration/test_pg_promote.py). A switchover
    often meets that: the stream from the stopped primary failed tens of milliseconds before. Traced on
    this machine: 3 switchovers in 10 paid the whole ``again_s`` (0.25 s, then 0.05 s) on top of a
    promotion that otherwise ends 40-60 ms after the request. Another request costs a file and a signal;
    one that lands after recovery ended leaves a ``promote`` file, which PostgreSQL 15 reads only when
    signalled (each request writes it anew) and the postmaster removes when it next starts.
    """
    deadline = clock.monotonic() + timeout_s
    try:
        if conn is not None and not conn.closed:
            try:
                return _promote_on(conn, clock, deadline, timeout_s, poll_s, again_s)
            except psycopg.OperationalError:
                if not conn.closed:
                    raise  # the server answered with an error: not a broken connection
        with connect(settings, timeout_s) as fresh:
            _promote_on(fresh, clock, deadline, timeout_s, poll_s, again_s)
    except psycopg.Error as e:
        raise PgError(f"promotion failed: {str(e).strip()}") from None


def _promote_on(conn: psycopg.Connection, clock: Clock, deadline: float, timeout_s: float, poll_s: float,
                again_s: float) -> None:
    try:
        row = conn.execute("SELECT pg_promote(false)").fetchone()
    except psycopg.errors.ObjectNotInPrerequisiteState:
        row = None  # "recovery is not in progress": an earlier request (a broken connection's) did it
        if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,):
            return
    if not row or row[0] is not True:
        raise PgError("promotion could not be requested (pg_promote returned false)")
    asked = clock.monotonic()
    while (row := conn.execute("SELECT pg_is_in_recovery()").fetchone()) and row[0]:
        now = clock.monotonic()
        if now >= deadline:
            raise PgError(f"promotion did not complete within {timeout_s:g}s")
        if now - asked >= again_s:
            asked = now
            try:
                conn.execute("SELECT pg_promote(false)")
            except psycopg.errors.ObjectNotInPrerequisiteState:
                pass  # recovery ended since the last look: the next look sees it
        clock.sleep(poll_s)


def as_role(conninfo: str, user: str, **params: Any) -> str:
    """The server ``conninfo`` names, for ``user`` (e.g. the replication role's conninfo from the rewind one);
    host and port only, as :func:`member_conninfo`."""
    return member_conninfo(conninfo, user=user, **params)
