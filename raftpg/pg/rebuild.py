"""Making this member's data directory a copy of another's: clone (pg_basebackup, or the user's replica
methods: pgBackRest, WAL-G, Barman, a script), rewind (pg_rewind), and moving a data directory aside. None of them runs with the postmaster up; ``control.Postgres`` ensures it.

Only the host and port of the source's conninfo are used (it comes from the DCS); the user, the pgpass
file (with lines for that host and port only) and ``require_auth`` where libpq has it are raftpg's own.

User data is never deleted: ``move_data_aside`` renames. The one deletion is ``clone``'s cleanup of its own
failed attempt, in a directory that was missing or empty when it began.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable

from raftpg.clock import Clock
from raftpg.model import DataDir
from raftpg.pg.bootstrap import run_command
from raftpg.pg.conf import write_pgpass
from raftpg.pg.connection import member_conninfo, scram_params, server_address
from raftpg.pg.controldata import data_dir_state, read_controldata
from raftpg.pg.process import kill_orphans
from raftpg.pg.settings import BASEBACKUP, CommandMethod, PgSettings
from raftpg.pg.tools import PgError, run_tool

log = logging.getLogger(__name__)


def clone(settings: PgSettings, source_conninfo: str, timeout_s: float | None,
          on_progress: Callable[[int], None] | None = None) -> str:
    """Create this replica's data directory, in the missing or empty data directory, by the configured
    ``replica_methods`` in order (default: pg_basebackup only; from ``standby_source``, the standby leader's
    copy: ``standby_replica_methods`` when given) until one succeeds; return the copy's
    system identifier. ``source_conninfo`` names the member to copy from; only its host and port are used.
    An empty one (no running member) leaves only the command methods marked ``no_leader``.

    A command method runs as ``command --scope=S --role=replica --datadir=D --connstring=C --opt=v...``
    (``no_params`` leaves out the first four; ``C`` connects as the replication role, its password in the
    pgpass file). On failure nothing half-made stays behind: a failed attempt is removed (a directory this
    call created is removed, one that was empty is emptied), except that a ``keep_data`` method's attempt
    is handed to the next method when that one keeps data too (pgBackRest --delta resumes it).
    Raises PgError naming each method's failure. ``timeout_s`` None: ``postgresql.create_replica_timeout``
    (``settings.clone_timeout_s``), by default no deadline (a large replica takes as long as it takes). ``on_progress`` is called with pg_basebackup's percentage as it reports it.
    """
    timeout_s = settings.clone_timeout_s if timeout_s is None else timeout_s
    state, _ = data_dir_state(settings)
    if state not in (DataDir.MISSING, DataDir.EMPTY):
        raise PgError(f"refusing to clone into {settings.data_dir}: the data directory is {state}")
    created = state is DataDir.MISSING
    methods = list(settings.replica_methods) or [CommandMethod(BASEBACKUP, "")]
    if settings.standby_replica_methods and settings.standby_source is not None and source_conninfo \
            and server_address(source_conninfo) == settings.standby_source:
        methods = list(settings.standby_replica_methods)  # the standby leader: standby_cluster's methods
    if not source_conninfo:
        methods = [m for m in methods if m.name != BASEBACKUP and m.no_leader]
        if not methods:
            raise PgError("no member to copy from, and no replica method marked no_leader")
    failures: list[str] = []
    for i, method in enumerate(methods):
        if not method.keep_data or (i and not methods[i - 1].keep_data):
            _empty(settings.data_dir)
        os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        try:
            if method.name == BASEBACKUP:
                return _basebackup(settings, source_conninfo, timeout_s, on_progress)
            return _command(settings, method, source_conninfo, timeout_s)
        except PgError as e:
            failures.append(f"{method.name}: {e}")
            log.warning("creating the replica with %s failed: %s", method.name, e)
        except BaseException:
            _discard_attempt(settings.data_dir, created)
            raise
    _discard_attempt(settings.data_dir, created)
    raise PgError("every replica method failed:\n" + "\n".join(failures))


PROGRESS = re.compile(r"\((\d{1,3})%\)")  # pg_basebackup --progress: "12345/67890 kB (18%), 0/1 tablespace"


def _basebackup(settings: PgSettings, source_conninfo: str, timeout_s: float | None,
                on_progress: Callable[[int], None] | None = None) -> str:
    cred = settings.replication
    conninfo = member_conninfo(source_conninfo, user=cred.username, passfile=settings.pgpass,
                               **scram_params(settings, cred))
    write_pgpass(settings, server_address(source_conninfo))
    args = ["-D", settings.data_dir, "-X", "stream", "-c", "fast", "-w", "-d", conninfo, *settings.basebackup_args]
    if on_progress is None:
        run_tool(settings, "pg_basebackup", args, timeout_s)
        return _copied_sysid(settings, "pg_basebackup")
    last = [-1]

    def report(line: str) -> None:
        found = PROGRESS.search(line)
        if found and int(found.group(1)) != last[0]:
            last[0] = int(found.group(1))
            on_progress(min(100, last[0]))

    run_tool(settings, "pg_basebackup", [*args, "--progress"], timeout_s, on_stderr=report)
    return _copied_sysid(settings, "pg_basebackup")


def _command(settings: PgSettings, method: CommandMethod, source_conninfo: str, timeout_s: float | None) -> str:
    connstring = ""
    if source_conninfo:
        cred = settings.replication
        connstring = member_conninfo(source_conninfo, user=cred.username, passfile=settings.pgpass, dbname="postgres",
                                     **scram_params(settings, cred))
        write_pgpass(settings, server_address(source_conninfo))
    params = {"scope": settings.scope, "role": "replica", "datadir": settings.data_dir, "connstring": connstring}
    argv = method.argv(params)
    log.info("creating the replica with %s: running %s", method.name, argv[0])
    run_command(settings, argv, timeout_s, f"replica method {method.name}")
    return _copied_sysid(settings, method.name)


def _copied_sysid(settings: PgSettings, what: str) -> str:
    try:
        sysid = read_controldata(settings).sysid
    except PgError as e:
        raise PgError(f"{what} finished but left no usable data directory: {e}") from None
    if not sysid:
        raise PgError(f"{what} finished but the copy has no system identifier")
    return sysid


def _empty(data_dir: str) -> None:
    """Remove what an earlier failed method left in the data directory (only ever a clone's own attempt)."""
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        _discard_attempt(data_dir, created=False)


def _discard_attempt(data_dir: str, created: bool) -> None:
    log.warning("clone into %s failed: removing the partial copy", data_dir)
    if created:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for entry in os.listdir(data_dir):
        path = os.path.join(data_dir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def rewind(settings: PgSettings, source_conninfo: str, timeout_s: float) -> bool:
    """pg_rewind the stopped data directory to ``source_conninfo``'s host and port, as the rewind role (else the
    superuser). True if the data directory now follows the source's history; False if pg_rewind failed
    (logged with its stderr): the data directory may then be unusable and should be moved aside and cloned.

    A target that was not shut down cleanly is first taken through crash recovery in single-user mode by
    pg_rewind itself (PostgreSQL 13+). standby.signal is removed for that (single-user mode refuses standby
    mode); the caller writes it back whatever the outcome.
    """
    cred = settings.rewind_credentials
    conninfo = member_conninfo(source_conninfo, user=cred.username, passfile=settings.pgpass, dbname="postgres",
                               **scram_params(settings, cred))
    write_pgpass(settings, server_address(source_conninfo))
    for signal_file in ("standby.signal", "recovery.signal"):
        try:
            os.unlink(os.path.join(settings.data_dir, signal_file))
        except FileNotFoundError:
            pass
    args = ["--target-pgdata", settings.data_dir, "--source-server", conninfo]
    try:
        kill_orphans(settings)  # pg_rewind's crash recovery in single-user mode needs the shared memory free
        out = run_tool(settings, "pg_rewind", args, timeout_s)
    except PgError as e:
        log.warning("pg_rewind of %s failed: %s", settings.data_dir, e)
        return False
    # its stdout ends with the prompt of the single-user crash recovery ("backend>") when it ran one
    said = [line.strip() for line in out.splitlines() if line.strip() and line.strip() != "backend>"]
    log.info("pg_rewind of %s: done%s", settings.data_dir, f" ({said[-1]})" if said else "")
    return True


def move_data_aside(settings: PgSettings, clock: Clock) -> str:
    """Rename the data directory to ``<data_dir>.<YYYYmmddTHHMMSS>.failed`` (``-N`` appended if taken)."""
    if not os.path.exists(settings.data_dir):
        raise PgError(f"cannot move {settings.data_dir} aside: it does not exist")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock.wall()))
    base = f"{settings.data_dir.rstrip('/')}.{stamp}.failed"
    target = base
    for n in range(1, 1000):
        if not os.path.exists(target):
            break
        target = f"{base}-{n}"
    else:
        raise PgError(f"cannot move {settings.data_dir} aside: too many {base}-N already")
    os.rename(settings.data_dir, target)
    log.warning("moved data directory %s aside to %s", settings.data_dir, target)
    return target
