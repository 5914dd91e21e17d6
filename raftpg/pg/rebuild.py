"""Making this member's data directory a copy of another's: clone (pg_basebackup), rewind (pg_rewind), and
moving a data directory aside. None of them runs with the postmaster up; ``control.Postgres`` ensures it.

Only the host and port of the source's conninfo are used (it comes from the DCS); the user, the pgpass
file (with lines for that host and port only) and ``require_auth`` where libpq has it are raftpg's own.

User data is never deleted: ``move_data_aside`` renames. The one deletion is ``clone``'s cleanup of its own
failed attempt, in a directory that was missing or empty when it began.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from raftpg.clock import Clock
from raftpg.model import DataDir
from raftpg.pg.conf import write_pgpass
from raftpg.pg.connection import member_conninfo, scram_params, server_address
from raftpg.pg.controldata import data_dir_state, read_controldata
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError, run_tool

log = logging.getLogger(__name__)


def clone(settings: PgSettings, source_conninfo: str, timeout_s: float) -> str:
    """pg_basebackup from ``source_conninfo``'s host and port, as the replication role, into a missing or empty
    data directory; return the copy's system identifier.

    On failure nothing half-made stays behind: a directory this call created is removed, a directory that was
    empty is emptied again. Raises PgError (with pg_basebackup's stderr tail).
    """
    state, _ = data_dir_state(settings)
    if state not in (DataDir.MISSING, DataDir.EMPTY):
        raise PgError(f"refusing to clone into {settings.data_dir}: the data directory is {state}")
    created = state is DataDir.MISSING
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    cred = settings.replication
    conninfo = member_conninfo(source_conninfo, user=cred.username, passfile=settings.pgpass,
                               **scram_params(settings, cred))
    write_pgpass(settings, server_address(source_conninfo))
    args = ["-D", settings.data_dir, "-X", "stream", "-c", "fast", "-w", "-d", conninfo, *settings.basebackup_args]
    try:
        run_tool(settings, "pg_basebackup", args, timeout_s)
        sysid = read_controldata(settings).sysid
        if not sysid:
            raise PgError("pg_basebackup finished but the copy has no system identifier")
        return sysid
    except BaseException:
        _discard_attempt(settings.data_dir, created)
        raise


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
        out = run_tool(settings, "pg_rewind", args, timeout_s)
    except PgError as e:
        log.warning("pg_rewind of %s failed: %s", settings.data_dir, e)
        return False
    log.info("pg_rewind of %s: %s", settings.data_dir, out.strip().splitlines()[-1:] or "done")
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
