"""A new cluster's first steps: initdb (or the user's bootstrap command), the roles raftpg needs, and the
user's post_bootstrap script.

``initdb`` runs only on a missing or empty data directory (DESIGN.md safety rule 7); ``control.Postgres``
checks that before calling ``run_initdb``, and marks the data directory as a bootstrap in progress after
it (``mark_bootstrap``), whichever method made it.

A custom ``bootstrap.method`` (Patroni's: a restore from pgBackRest, WAL-G, Barman, a script) runs instead of
initdb, as ``command --scope=S --datadir=D --opt=v...`` (``no_params`` leaves out the first two), with
no shell. Then, as in Patroni: with ``recovery_conf`` its settings are written to ``BOOTSTRAP_RECOVERY_CONF``
(included last by postgresql.conf) and ``recovery.signal`` is created, so the first start recovers to the
target and promotes; with ``keep_existing_recovery_conf`` the signal files and settings the command wrote
are kept; otherwise its signal files are removed and the copy starts as a primary at once. Roles are
created once the server has left recovery. ``unmark_bootstrap`` removes the recovery file.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from urllib.parse import quote

from psycopg import sql

from raftpg.clock import SystemClock
from raftpg.config.fields import guc_problem
from raftpg.pg.conf import BOOTSTRAP_RECOVERY_CONF, quote_guc, standby_minimums, write_atomic
from raftpg.pg.connection import query
from raftpg.pg.settings import CommandMethod, Credentials, PgSettings
from raftpg.pg.tools import PgError, kill_group, run_tool, tail, tool_env

log = logging.getLogger(__name__)

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
    for name in (BOOTSTRAP_MARKER, BOOTSTRAP_RECOVERY_CONF):
        try:
            os.unlink(os.path.join(data_dir, name))
        except FileNotFoundError:
            pass


def bootstrap_unfinished(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, BOOTSTRAP_MARKER))


CUSTOM_BOOTSTRAP_TIMEOUT_S = 24 * 3600.0
"""A restore takes as long as it takes (Patroni sets no limit); this only keeps a hung command from
holding the new cluster's leader key forever."""


def run_initdb(settings: PgSettings, timeout_s: float) -> None:
    """Make the new cluster's data directory: initdb, or the configured bootstrap command (which gets
    ``CUSTOM_BOOTSTRAP_TIMEOUT_S`` rather than ``timeout_s``, meant for initdb)."""
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    if settings.bootstrap_method is not None:
        run_bootstrap_command(settings, settings.bootstrap_method, CUSTOM_BOOTSTRAP_TIMEOUT_S)
        return
    args = ["-D", settings.data_dir, "-U", settings.superuser.username, *settings.initdb_args]
    run_tool(settings, "initdb", args, timeout_s, c_locale=False)


def run_bootstrap_command(settings: PgSettings, method: CommandMethod, timeout_s: float) -> None:
    argv = method.argv({"scope": settings.scope, "datadir": settings.data_dir})
    log.info("bootstrap method %s: running %s", method.name, argv[0])
    run_command(settings, argv, timeout_s, f"bootstrap method {method.name}")
    if not os.path.isfile(os.path.join(settings.data_dir, "global", "pg_control")):
        raise PgError(f"bootstrap method {method.name}: {argv[0]} exited 0 but left no data directory in "
                      f"{settings.data_dir}")
    _unlink(os.path.join(settings.data_dir, "promote"))  # a stale trigger file would promote too early
    recovery: list[tuple[str, str]] = []
    if method.recovery_conf is not None:
        recovery = list(method.recovery_conf)
        write_atomic(os.path.join(settings.data_dir, "recovery.signal"), "")
        _unlink(os.path.join(settings.data_dir, "standby.signal"))
    elif not method.keep_existing_recovery_conf:
        for name in ("recovery.signal", "standby.signal"):
            _unlink(os.path.join(settings.data_dir, name))
    if any(os.path.exists(os.path.join(settings.data_dir, n)) for n in ("recovery.signal", "standby.signal")):
        # recovery refuses to start below the source's settings ("recovery aborted because of insufficient
        # parameter settings"): the first start uses the larger of the source's and the configured ones
        recovery = _recovery_minimums(settings) + recovery
        text = "# raftpg: recovery settings of the custom bootstrap, removed once the cluster is registered\n"
        text += "".join(f"{name} = {quote_guc(value)}\n" for name, value in recovery
                        if guc_problem(name, value) is None)
        write_atomic(os.path.join(settings.data_dir, BOOTSTRAP_RECOVERY_CONF), text)


def _recovery_minimums(settings: PgSettings) -> list[tuple[str, str]]:
    configured = {k.lower(): v for k, v in settings.parameters.items()}
    return [(name, str(max(value, _int(configured.get(name)))))
            for name, value in standby_minimums(settings).items()]


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def run_command(settings: PgSettings, argv: list[str], timeout_s: float | None, what: str) -> None:
    """Run a user's command (no shell) in its own session, with the agent's environment and pgpass;
    raise PgError with its output's tail on a non-zero exit or after ``timeout_s`` (its group is killed)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=tool_env(settings, c_locale=False), start_new_session=True)
    except OSError as e:
        raise PgError(f"{what}: cannot run {argv[0]}: {e}") from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, _ = proc.communicate()
        raise PgError(f"{what}: {argv[0]} did not finish within {timeout_s:g}s and was killed\n{tail(out)}") from None
    if proc.returncode != 0:
        raise PgError(f"{what}: {argv[0]} failed with exit code {proc.returncode}\n{tail(out)}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def wait_out_of_recovery(settings: PgSettings, timeout_s: float) -> None:
    """A custom bootstrap may start in archive recovery: roles can be created only once it has promoted."""
    clock = SystemClock()
    deadline = clock.monotonic() + timeout_s
    while True:
        try:
            rows = query(settings, "SELECT pg_is_in_recovery()", timeout_s=max(1.0, deadline - clock.monotonic()))
            if rows[0][0] is False:
                return
        except PgError:
            pass  # not accepting connections yet (recovery not consistent)
        if clock.monotonic() >= deadline:
            raise PgError(f"the new cluster was still in recovery after {timeout_s:g}s: roles not created")
        clock.sleep(0.2)


def create_roles(settings: PgSettings, timeout_s: float) -> None:
    """Superuser password; the replication role; the rewind role and its grants. Idempotent. Waits first
    until the server has left recovery (a custom bootstrap's first start)."""
    if settings.bootstrap_method is not None:
        wait_out_of_recovery(settings, timeout_s)
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
