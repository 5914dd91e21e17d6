"""A new cluster's first steps: initdb, the roles raftpg needs, and the user's post_bootstrap script.

``initdb`` runs only on a missing or empty data directory (DESIGN.md safety rule 7); ``control.Postgres``
checks that before calling ``run_initdb``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from urllib.parse import quote

from psycopg import sql

from raftpg.pg.connection import query
from raftpg.pg.settings import Credentials, PgSettings
from raftpg.pg.tools import PgError, run_tool, tail, tool_env

# What pg_rewind needs on the source server when it does not connect as a superuser
# (PostgreSQL docs, pg_rewind, "Notes").
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


BOOTSTRAP_MARKER = "raftpg.bootstrapping"  # in the data dir from initdb until the cluster is registered


def mark_bootstrap(data_dir: str) -> None:
    with open(os.path.join(data_dir, BOOTSTRAP_MARKER), "w") as f:
        f.write("initdb by raftpg; the cluster is not registered in the DCS yet\n")
        f.flush()
        os.fsync(f.fileno())


def unmark_bootstrap(data_dir: str) -> None:
    try:
        os.unlink(os.path.join(data_dir, BOOTSTRAP_MARKER))
    except FileNotFoundError:
        pass


def bootstrap_unfinished(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, BOOTSTRAP_MARKER))


def run_initdb(settings: PgSettings, timeout_s: float) -> None:
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    args = ["-D", settings.data_dir, "-U", settings.superuser.username, *settings.initdb_args]
    run_tool(settings, "initdb", args, timeout_s, c_locale=False)


def create_roles(settings: PgSettings, timeout_s: float) -> None:
    """Superuser password; the replication role; the rewind role and its grants. Idempotent."""
    su = settings.superuser
    if su.password:
        _set_password(settings, su, timeout_s)
    if settings.replication.username != su.username:
        _ensure_role(settings, settings.replication, "REPLICATION", timeout_s)
    rewind = settings.rewind
    if rewind is not None and rewind.username != su.username:
        _ensure_role(settings, rewind, "", timeout_s)
        for function in REWIND_FUNCTIONS:
            query(settings, sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                sql.SQL(function), sql.Identifier(rewind.username)), timeout_s=timeout_s)


def _ensure_role(settings: PgSettings, cred: Credentials, attributes: str, timeout_s: float) -> None:
    exists = query(settings, "SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.username,), timeout_s=timeout_s)
    verb = "ALTER" if exists else "CREATE"
    query(settings, sql.SQL("{} ROLE {} WITH LOGIN {}").format(
        sql.SQL(verb), sql.Identifier(cred.username), sql.SQL(attributes)), timeout_s=timeout_s)
    if cred.password:
        _set_password(settings, cred, timeout_s)


def _set_password(settings: PgSettings, cred: Credentials, timeout_s: float) -> None:
    # DDL takes no bind parameters: the password is sent as a quoted literal (hashed by the server with
    # password_encryption); it would appear in the server log only with log_statement = 'ddl' or 'all'.
    query(settings, sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
        sql.Identifier(cred.username), sql.Literal(cred.password)), timeout_s=timeout_s)


def run_post_bootstrap(settings: PgSettings, timeout_s: float) -> None:
    """Run ``post_bootstrap`` with a superuser connection URL as its last argument
    (``postgresql://<superuser>@<socket dir, %-encoded>:<port>/postgres?passfile=...``)."""
    if not settings.post_bootstrap:
        return
    url = (f"postgresql://{quote(settings.superuser.username, safe='')}@{quote(settings.socket_dir, safe='')}"
           f":{settings.port}/postgres?passfile={quote(settings.pgpass, safe='')}")
    argv = [*shlex.split(settings.post_bootstrap), url]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s,
                              env=tool_env(settings), start_new_session=True)
    except subprocess.TimeoutExpired:
        raise PgError(f"post_bootstrap {argv[0]} did not finish within {timeout_s:g}s") from None
    except OSError as e:
        raise PgError(f"post_bootstrap {argv[0]} could not start: {e}") from None
    if done.returncode != 0:
        raise PgError(f"post_bootstrap {argv[0]} failed with exit code {done.returncode}\n"
                      f"{tail(done.stderr or done.stdout)}")
