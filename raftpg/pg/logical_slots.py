"""Copies of the permanent logical slots on a replica (PostgreSQL 15 has no failover slots).

A logical slot cannot be created on a standby before PostgreSQL 16, and a slot created afresh on a
promoted replica starts at its own position: a CDC consumer would silently miss every change between
what it confirmed and the promotion. So each replica keeps a copy of the primary's slot:

- **copy**: the slot's on-disk state (``pg_replslot/<name>/state``, read on the primary with
  ``pg_read_binary_file`` as the rewind role, which is granted it) is written into this data directory
  while PostgreSQL is stopped; it loads the slot at start. Done when the copy is missing, made for another
  database or plugin, or *ahead* of the published position (left by another history: an old primary that
  rejoined), and again when advancing it finds its WAL already recycled here (the primary's newer state
  then starts later). At most one copy per slot per ``COPY_BACKOFF_S``: each one restarts PostgreSQL.
- **advance**: to the position the primary publishes for it (its ``confirmed_flush_lsn``: what the
  consumer confirmed), never past what this replica replayed (``pg_replication_slot_advance``; on a
  standby it decodes in fast-forward, no output).
- **drop**: a copy raftpg made whose slot is no longer in the dynamic config (inactive ones only).

The copy is safe to decode from after a promotion only if the catalog rows it needs were kept:
``hot_standby_feedback`` (on by default here) reports the copy's ``catalog_xmin`` to the primary through
this replica's physical slot. Until the primary shows that (``check_ready``, Patroni's rule), the copy is
*unready*: logged, and named in a warning if this replica is promoted meanwhile (ha/DESIGN.md, "Logical
slots"). Readiness is remembered by the running agent only: after a restart of the agent, copies made
before it are not checked again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from raftpg.model import PermanentSlot
from raftpg.model.lsn import format_lsn, parse_lsn
from raftpg.model.slots import slot_name_for
from raftpg.pg.conf import write_atomic, write_pgpass
from raftpg.pg.connection import member_conninfo, query, scram_params, server_address
from raftpg.pg.settings import PgSettings
from raftpg.pg.slots import LOGICAL_RECORD, read_record
from raftpg.pg.tools import PgError

log = logging.getLogger(__name__)

COPY_BACKOFF_S = 30.0
WAL_GONE = "has already been removed"  # pg_replication_slot_advance when the copy's restart_lsn is recycled

_copied_at: dict[tuple[str, str], float] = {}  # (data dir, slot) -> monotonic time of the last copy
_unready: dict[tuple[str, str], int | None] = {}  # (data dir, slot) -> the primary's catalog_xmin at the copy
_warned: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class SlotFile:
    """One slot's state file, read on the primary."""

    name: str
    database: str
    plugin: str
    state: bytes
    catalog_xmin: int | None = None  # the primary's slot's, when read: what the copy needs kept there


def keep_copies(settings: PgSettings, slots: tuple[tuple[PermanentSlot, int], ...], source: str, now: float,
                restart: Callable[[Callable[[], None]], object]) -> set[str]:
    """Advance this replica's copies of the logical ``slots`` (each with its published position), drop
    the unwanted ones, and copy the missing ones from the primary at ``source``: ``restart(install)``
    stops PostgreSQL, runs ``install`` and starts it again, once for all of them. The names copied."""
    wanted = {slot.name: (slot, at) for slot, at in slots}
    _, _, due = follow(settings, wanted, now)
    if unready(settings):
        check_ready(settings, source)
    files = fetch(settings, source, {name: wanted[name][0] for name in due}) if due else []
    if files:
        log.info("copying logical slot(s) %s from the primary: restarting PostgreSQL to load them",
                 ", ".join(f.name for f in files))
        restart(lambda: install(settings, files, now))
    return {f.name for f in files}


def follow(settings: PgSettings, wanted: Mapping[str, tuple[PermanentSlot, int]], now: float,
           timeout_s: float = 10.0) -> tuple[set[str], set[str], set[str]]:
    """Advance the copies in ``wanted`` (slot name -> (slot, published position)) and drop the unwanted
    copies raftpg made. Returns (advanced, dropped, to_copy): the slots to copy from the primary now
    (backoff applied). Only on a replica; PgError when the server cannot be queried."""
    recorded = read_record(settings.data_dir, LOGICAL_RECORD)
    if not wanted and not recorded:
        return set(), set(), set()  # no logical slot in the config, and no copy of one here
    (in_recovery, replay, feedback), = query(
        settings, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                  "current_setting('hot_standby_feedback')::boolean", timeout_s=timeout_s)
    if not in_recovery:
        return set(), set(), set()
    if wanted and not feedback:
        _warn_once(settings, "*", "copies of logical slots need hot_standby_feedback = on: without it the primary "
                                  "may vacuum catalog rows a copy needs, and it may fail after a failover")
    replayed = parse_lsn(replay) if replay else 0
    rows = query(settings, "SELECT slot_name, database, plugin, confirmed_flush_lsn::text, active "
                           "FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT temporary",
                 timeout_s=timeout_s)
    here = {str(r[0]): (str(r[1]), str(r[2]), parse_lsn(r[3]) if r[3] else 0, bool(r[4])) for r in rows}
    advanced: set[str] = set()
    dropped: set[str] = set()
    to_copy: set[str] = set()
    for name, (slot, published) in sorted(wanted.items()):
        copy = here.get(name)
        if copy is None or (copy[0], copy[1]) != (slot.database, slot.plugin) or copy[2] > published:
            to_copy.add(name)
            continue
        target = min(published, replayed)
        if target <= copy[2]:
            continue
        try:
            query(settings, "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (name, format_lsn(target)),
                  timeout_s=timeout_s, dbname=slot.database or "postgres")
            advanced.add(name)
        except PgError as e:
            if WAL_GONE in str(e):
                to_copy.add(name)  # the primary's slot has moved on since: a newer copy starts later
            else:
                _warn_once(settings, name, f"its copy cannot be advanced to {format_lsn(target)}: {e}")
    for name in sorted(recorded & set(here) - set(wanted)):
        if not here[name][3]:
            try:
                query(settings, "SELECT pg_drop_replication_slot(%s)", (name,), timeout_s=timeout_s)
                dropped.add(name)
                _unready.pop((settings.data_dir, name), None)
                log.info("dropped the copy of logical slot %s: no longer in the dynamic config", name)
            except PgError as e:
                _warn_once(settings, name, f"its copy could not be dropped: {e}")
    due = {n for n in to_copy if now - _copied_at.get((settings.data_dir, n), -COPY_BACKOFF_S) >= COPY_BACKOFF_S}
    return advanced, dropped, due


def fetch(settings: PgSettings, source: str, wanted: Mapping[str, PermanentSlot],
          timeout_s: float = 10.0) -> list[SlotFile]:
    """The state files of the ``wanted`` slots on the primary at ``source`` (host and port only), read
    as the rewind role (else the superuser); a slot there with another database or plugin is skipped
    (logged). [] when the primary cannot be asked (logged): the copies wait for the next try."""
    try:
        rows = _on_primary(settings, source, timeout_s,
                           "SELECT s.slot_name, d.datname, s.plugin, "
                           "pg_read_binary_file('pg_replslot/' || s.slot_name || '/state'), "
                           "s.catalog_xmin::text::bigint "
                           "FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid "
                           "WHERE s.slot_type = 'logical' AND NOT s.temporary AND NOT pg_is_in_recovery() "
                           "AND s.slot_name = ANY(%s)", (sorted(wanted),))
    except psycopg.Error as e:
        _warn_once(settings, "*fetch", f"logical slots could not be read on the primary: {str(e).strip()}")
        return []
    files = []
    for name, database, plugin, state, catalog_xmin in rows:
        slot = wanted[str(name)]
        if (database, plugin) != (slot.database, slot.plugin):
            _warn_once(settings, str(name), f"not copied: on the primary it is {database}/{plugin}, "
                                            f"the config wants {slot.database}/{slot.plugin}")
            continue
        files.append(SlotFile(str(name), str(database), str(plugin), bytes(state), catalog_xmin))
    return files


def unready(settings: PgSettings) -> list[str]:
    """The copies made here that are not known to be safe to decode from after a promotion yet."""
    return sorted(name for data_dir, name in _unready if data_dir == settings.data_dir)


def warn_if_unready(settings: PgSettings) -> None:
    """Called right after a promotion: name the copies not known to be safe (a consumer may fail on them)."""
    names = unready(settings)
    if names:
        log.warning("promoted with logical slot copies that may not be usable (the old primary may have removed "
                    "catalog rows they need): %s", ", ".join(names))
    for name in names:
        _unready.pop((settings.data_dir, name), None)


def check_ready(settings: PgSettings, source: str, timeout_s: float = 10.0) -> set[str]:
    """A copy is safe to use after a failover once the primary keeps the catalog rows it needs: this
    replica's physical slot there holds a ``catalog_xmin`` (from ``hot_standby_feedback``) that is not
    newer than the copy's and not older than the primary's slot's when it was copied (Patroni's rule).
    Returns the copies found ready now (each logged)."""
    pending = {name: xmin for (data_dir, name), xmin in _unready.items() if data_dir == settings.data_dir}
    try:
        held = _on_primary(settings, source, timeout_s, "SELECT catalog_xmin::text::bigint FROM pg_replication_slots "
                           "WHERE slot_name = %s AND NOT pg_is_in_recovery()", (slot_name_for(settings.name),))
        here = dict(query(settings, "SELECT slot_name, catalog_xmin::text::bigint FROM pg_replication_slots "
                                    "WHERE slot_name = ANY(%s)", (sorted(pending),), timeout_s=timeout_s))
    except (psycopg.Error, PgError) as e:
        _warn_once(settings, "*ready", f"cannot tell whether the logical slot copies are safe yet: {e}")
        return set()
    physical = held[0][0] if held else None
    ready = set()
    for name, copied_at in sorted(pending.items()):
        mine = here.get(name)
        if physical is not None and mine is not None and (copied_at or 0) <= physical <= mine:
            ready.add(name)
            del _unready[(settings.data_dir, name)]
            log.info("logical slot %s: its copy is safe to use after a failover (the primary keeps the catalog "
                     "rows it needs for this replica)", name)
        elif physical is None:
            _warn_once(settings, name, "its copy is not safe to use after a failover yet: the primary holds no "
                                       "catalog rows for this replica (no hot_standby_feedback from it yet)")
    return ready


def _on_primary(settings: PgSettings, source: str, timeout_s: float, sql: str,
                params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """One query on the primary at ``source`` (host and port only) as the rewind role (else the
    superuser), which may read the data directory's files. psycopg.Error as it comes."""
    cred = settings.rewind_credentials
    conninfo = member_conninfo(source, user=cred.username, passfile=settings.pgpass, dbname="postgres",
                               connect_timeout=max(1, int(timeout_s)), **scram_params(settings, cred))
    write_pgpass(settings, server_address(source))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
        return conn.execute(sql, params).fetchall()


def install(settings: PgSettings, files: list[SlotFile], now: float) -> None:
    """Write the slots' state files into the stopped data directory (each through a temporary directory
    renamed into place, fsynced), replacing any copy there, and record them as raftpg's."""
    replslot = os.path.join(settings.data_dir, "pg_replslot")
    for f in files:
        final, tmp = os.path.join(replslot, f.name), os.path.join(replslot, f.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp, 0o700)
        fd = os.open(os.path.join(tmp, "state"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f.state)
            os.fsync(fd)
        finally:
            os.close(fd)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(final)
        _copied_at[(settings.data_dir, f.name)] = now
        _unready[(settings.data_dir, f.name)] = f.catalog_xmin
    _fsync_dir(replslot)
    recorded = read_record(settings.data_dir, LOGICAL_RECORD) | {f.name for f in files}
    write_atomic(os.path.join(settings.data_dir, LOGICAL_RECORD), "".join(f"{n}\n" for n in sorted(recorded)))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _warn_once(settings: PgSettings, name: str, problem: str) -> None:
    key = (settings.data_dir, name)
    if _warned.get(key) != problem:
        _warned[key] = problem
        log.warning("%s", problem if name.startswith("*") else f"logical slot {name}: {problem}")
