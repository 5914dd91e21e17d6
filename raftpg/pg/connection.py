"""Connecting to PostgreSQL: the agent's own superuser connection and conninfo strings for other members.

The agent connects over the unix socket as the superuser, with the pgpass file, a connect timeout and a
statement timeout, in autocommit mode, one short-lived connection per operation (thread-safe by construction;
a unix-socket connection costs a few milliseconds, far below one HA cycle).
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from raftpg.pg.pidfile import read_pidfile
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError


def conninfo_for(
    host: str, port: int, user: str, *, application_name: str | None = None,
    passfile: str | None = None, dbname: str | None = None, **extra: Any,
) -> str:
    """A libpq key=value conninfo (quoted as libpq needs) for another member's PostgreSQL."""
    params = dict(host=host, port=port, user=user, application_name=application_name,
                  passfile=passfile, dbname=dbname, **extra)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def with_defaults(conninfo: str, **defaults: Any) -> str:
    """``conninfo`` (URL or key=value) with each default added unless the conninfo already sets that key."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as e:
        raise PgError(f"not a valid conninfo: {e}") from None
    for key, value in defaults.items():
        if value is not None and key not in params:
            params[key] = value
    return make_conninfo("", **params)


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


def as_role(conninfo: str, user: str, **defaults: Any) -> str:
    """The same server as ``conninfo``, for another role: ``user`` replaced, ``dbname``, ``password`` and
    ``passfile`` dropped, then ``defaults`` added (e.g. the replication role's conninfo from the rewind one)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as e:
        raise PgError(f"not a valid conninfo: {e}") from None
    for key in ("user", "dbname", "password", "passfile"):
        params.pop(key, None)
    return with_defaults(make_conninfo("", **params), user=user, **defaults)
