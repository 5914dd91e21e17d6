"""Copies of the permanent logical slots on a replica (PostgreSQL 15 has no failover slots).

A logical slot cannot be created on a standby before PostgreSQL 16, and a slot created afresh on a
promoted replica starts at its own position: a CDC consumer would silently miss every change between
what it confirmed and the promotion. So each replica keeps a copy of the primary's slot:

- **copy**: the slot's on-disk state (``pg_replslot/<name>/state``, read on the primary with
  ``pg_read_binary_file`` as the rewind role, which is granted it) is written into this data directory
  while PostgreSQL is stopped; it loads the slot at start. Done when the copy is missing, made for another
  database or plugin, *ahead* of the published position (left by another history: an old primary that
  rejoined), or unusable (its WAL recycled here, or invalidated: SQLSTATE 58P01 / 55000, ``wal_status``
  lost), and only once this replica replayed past the state's confirmed position, runs with ``wal_level =
  logical`` and has a free slot; never from a server of another cluster (system identifier). At most one
  copy per slot per ``COPY_BACKOFF_S``: each one restarts PostgreSQL. The WAL from the slot's restart
  position that this replica never had (a slot older than its base backup) comes with it (``wal_copy``);
  a copy whose WAL is missing here is unusable, and made again.
- **advance**: to the position the primary publishes for it (its ``confirmed_flush_lsn``: what the
  consumer confirmed), never past what this replica replayed, in steps of ``ADVANCE_STEP`` (each call of
  ``pg_replication_slot_advance`` keeps its progress; a long gap is closed over several chores).
- **drop**: a copy raftpg made of a slot that is no longer in the dynamic config (inactive ones only).

The copy is safe to decode from after a promotion only if the catalog rows it needs were kept:
``hot_standby_feedback`` (on by default here) reports the copy's ``catalog_xmin`` to the primary through
this replica's physical slot. Until the primary shows that (``check_ready``, Patroni's rule), the copy is
*unready*: logged, and named in a warning if this replica is promoted meanwhile (ha/DESIGN.md, "Logical
slots"). Readiness is checked again for every copy when the agent starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from raftpg.clock import Clock
from raftpg.model import PermanentSlot
from raftpg.model.lsn import format_lsn, parse_lsn
from raftpg.model.slots import slot_name_for
from raftpg.pg import wal_copy
from raftpg.pg.conf import fsync_dir, write_atomic, write_pgpass
from raftpg.pg.connection import connect, member_conninfo, query, scram_params, server_address
from raftpg.pg.settings import PgSettings
from raftpg.pg.slots import LOGICAL_RECORD, read_record
from raftpg.pg.tools import PgError

log = logging.getLogger(__name__)

COPY_BACKOFF_S = 30.0
ADVANCE_STEP = 128 << 20  # WAL bytes per pg_replication_slot_advance call
ADVANCE_BUDGET_S = 5.0    # per chore, every slot together
RECOPY = frozenset({"58P01", "55000"})  # the copy's WAL is gone here; the copy was invalidated
SLOT_MAGIC = 0x1051CA1
STATE_RESTART_AT = 16 + 64 + 4 * 4  # header, name, database, persistency, xmin, catalog_xmin

_copied_at: dict[tuple[str, str], float] = {}  # (data dir, slot) -> monotonic time of the last copy
_unready: dict[tuple[str, str], int | None] = {}  # (data dir, slot) -> the primary's catalog_xmin reference
_looked: set[str] = set()  # data dirs whose copies were all marked unready once (at agent start)
_warned: dict[tuple[str, str], str] = {}

Slots = tuple[tuple[PermanentSlot, int | None], ...]
"""Each logical slot of the config with the position the primary publishes for it (None: not published)."""


@dataclass(frozen=True)
class SlotFile:
    """One slot's state file, read on the primary."""

    name: str
    database: str
    plugin: str
    state: bytes
    confirmed_flush: int
    restart: int


@dataclass(frozen=True)
class Followed:
    advanced: set[str]
    dropped: set[str]
    due: set[str]       # to copy from the primary now (checks and backoff applied)
    replayed: int
    sysid: str
    segment_size: int
    unusable: set[str]  # copies here whose WAL is not whole: never ready, made again


def keep_copies(settings: PgSettings, slots: Slots, source: str, clock: Clock,
                restart: Callable[[Callable[[], None]], object]) -> set[str]:
    """Advance this replica's copies of the logical ``slots``, drop the unwanted ones, check readiness, and
    copy the missing ones from the primary at ``source``: ``restart(install)`` stops PostgreSQL, runs
    ``install`` and starts it again, once for all of them. The names copied."""
    wanted = {slot.name: (slot, at) for slot, at in slots}
    now = clock.monotonic()
    followed = follow(settings, wanted, clock)
    if followed is None:
        return set()
    if unready(settings):
        check_ready(settings, source, skip=followed.unusable)
    if not followed.due:
        return set()
    files = []
    for f in fetch(settings, source, {name: wanted[name][0] for name in followed.due}, followed.sysid):
        if f.confirmed_flush > followed.replayed:
            _warn_once(settings, f.name, "not copied yet: this replica has not replayed up to its position")
        else:
            files.append(f)
    size, here = followed.segment_size, wal_copy.local_numbers(settings.data_dir, followed.segment_size)
    files = [f for f in files if _wal_bounded(settings, f, followed, here)]
    if not files or not _fetch_wal(settings, source, files, followed, here):
        return set()
    installed: list[str] = []

    def install_all() -> None:  # PostgreSQL is stopped: its shutdown restartpoint may have removed WAL
        wal_copy.install(settings.data_dir)
        now_here = wal_copy.local_numbers(settings.data_dir, size)
        if _fetch_wal(settings, source, files, followed, now_here):
            wal_copy.install(settings.data_dir)
            now_here = wal_copy.local_numbers(settings.data_dir, size)
        whole = [f for f in files if not wal_copy.needed(f.restart, followed.replayed, now_here, size)]
        for f in files:
            if f not in whole:
                _warn_once(settings, f.name, "not copied this time: WAL from its restart position is missing here")
        install(settings, whole, now)
        installed.extend(f.name for f in whole)

    log.info("copying logical slot(s) %s from the primary: restarting PostgreSQL to load them",
             ", ".join(f.name for f in files))
    for f in files:  # the backoff holds even if the copy fails: each try restarts PostgreSQL
        _copied_at[(settings.data_dir, f.name)] = now
    restart(install_all)
    return set(installed)


def _wal_bounded(settings: PgSettings, f: SlotFile, followed: Followed, here: set[int]) -> bool:
    """Whether the WAL this copy lacks here is small enough to copy (else warned: it waits)."""
    gap = wal_copy.needed(f.restart, followed.replayed, here, followed.segment_size)
    if len(gap) <= wal_copy.max_segments(followed.segment_size):
        return True
    _warn_once(settings, f.name, f"not copied yet: {len(gap)} WAL segment(s) from its restart position "
                                 f"{format_lsn(f.restart)} are not here (more than "
                                 f"{wal_copy.max_segments(followed.segment_size)} to copy); it is copied once "
                                 f"its consumer confirms more")
    return False


def _fetch_wal(settings: PgSettings, source: str, files: list[SlotFile], followed: Followed,
               here: set[int]) -> bool:
    """Read on the primary, into temporary files, the WAL segments the copies to make lack ``here``.
    False (warned; tried again later) when they cannot be had."""
    size = followed.segment_size
    gap = {n for f in files for n in wal_copy.needed(f.restart, followed.replayed, here, size)}
    if not gap:
        return True
    try:
        wal_copy.clean(settings.data_dir)
        with _primary(settings, source, 30.0) as conn:
            wal_copy.fetch(conn, settings.data_dir, gap, size)
    except (psycopg.Error, PgError, OSError, ValueError) as e:
        _warn_once(settings, "*wal", f"logical slot copies wait: WAL segments they need could not be read on "
                                     f"the primary: {str(e).strip()}")
        return False
    log.info("logical slot copies: read %d WAL segment(s) on the primary that this replica never had (from %s)",
             len(gap), format_lsn(min(gap) * size))
    return True


def follow(settings: PgSettings, wanted: Mapping[str, tuple[PermanentSlot, int | None]], clock: Clock,
           timeout_s: float = 10.0) -> Followed | None:
    """Advance the published copies in ``wanted`` (slot name -> (slot, published position or None)) and
    drop the copies raftpg made of slots not in ``wanted``. None when there is nothing to do here (no
    logical slot wanted or kept, or not a replica); PgError when the server cannot be queried."""
    recorded = read_record(settings.data_dir, LOGICAL_RECORD)
    if not wanted and not recorded:
        return None
    (in_recovery, replay, feedback, wal_level, sysid, free, segment_size), = query(
        settings, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                  "current_setting('hot_standby_feedback')::boolean, current_setting('wal_level'), "
                  "(SELECT system_identifier FROM pg_control_system())::text, "
                  "current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots), "
                  "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
        timeout_s=timeout_s)
    if not in_recovery:
        return None
    if wanted and not feedback:
        _warn_once(settings, "*", "copies of logical slots need hot_standby_feedback = on: without it the primary "
                                  "may vacuum catalog rows a copy needs, and it may fail after a failover")
    replayed = parse_lsn(replay) if replay else 0
    rows = query(settings, "SELECT slot_name, database, plugin, confirmed_flush_lsn::text, active, wal_status, "
                           "restart_lsn::text FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT temporary",
                 timeout_s=timeout_s)
    here = {str(r[0]): (str(r[1]), str(r[2]), parse_lsn(r[3]) if r[3] else 0, bool(r[4]), r[5],
                        parse_lsn(r[6]) if r[6] else 0) for r in rows}
    size = int(segment_size)
    present = wal_copy.local_numbers(settings.data_dir, size)
    if settings.data_dir not in _looked:  # at agent start: every copy is checked once more (Patroni's rule)
        _looked.add(settings.data_dir)
        _unready.update({(settings.data_dir, n): None for n in wanted if n in here})
    advanced: set[str] = set()
    to_copy: set[str] = set()
    unusable: set[str] = set()
    now = clock.monotonic()
    deadline = now + ADVANCE_BUDGET_S
    for name, (slot, published) in sorted(wanted.items()):
        copy = here.get(name)
        if published is None:
            continue  # in the config, not (yet) published by the primary: whatever is here is kept
        if copy is not None and copy[5] and wal_copy.needed(copy[5], replayed, present, size):
            unusable.add(name)  # decoding would need WAL this replica does not have
            _unready[(settings.data_dir, name)] = None
            _warn_once(settings, name, f"its copy is not usable: WAL from its restart position "
                                       f"{format_lsn(copy[5])} is missing here; it is copied again with that WAL")
        if copy is None or (copy[0], copy[1]) != (slot.database, slot.plugin) or copy[2] > published \
                or copy[4] == "lost" or name in unusable:
            to_copy.add(name)
            continue
        state = _advance(settings, slot, copy[2], min(published, replayed), clock, deadline, timeout_s)
        if state == "advanced":
            advanced.add(name)
        elif state in RECOPY:
            to_copy.add(name)  # the primary's slot has moved on since: a newer copy starts later
    dropped = _drop(settings, {n for n in recorded & set(here) - set(wanted) if not here[n][3]}, timeout_s)
    due = {n for n in to_copy if now - _copied_at.get((settings.data_dir, n), -COPY_BACKOFF_S) >= COPY_BACKOFF_S}
    if due and wal_level != "logical":
        _warn_once(settings, "*wal_level", f"logical slots are not copied: this replica runs with wal_level = "
                                           f"{wal_level} (PostgreSQL refuses to start with a logical slot then)")
        due = set()
    new = sorted(n for n in due if n not in here)
    if len(new) > max(0, free):
        _warn_once(settings, "*slots", f"only {max(0, free)} free replication slot(s) here: max_replication_slots "
                                       f"is too small for copies of {', '.join(new)}")
        due -= set(new[max(0, free):])
    return Followed(advanced, dropped, due, replayed, str(sysid), size, unusable)


def _advance(settings: PgSettings, slot: PermanentSlot, at: int, target: int, clock: Clock, deadline: float,
             timeout_s: float) -> str:
    """Move the copy from ``at`` towards ``target`` in steps until the deadline: "advanced", "" (nothing
    to do, or no progress), or the SQLSTATE of a failure (logged unless the copy will be made again)."""
    moved = False
    try:
        with connect(settings, timeout_s, slot.database or "postgres") as conn:
            while at < target and clock.monotonic() < deadline:
                row = conn.execute("SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)",
                                   (slot.name, format_lsn(min(target, at + ADVANCE_STEP)))).fetchone()
                reached = parse_lsn(row[0]) if row and row[0] else at
                if reached <= at:
                    break
                at, moved = reached, True
    except psycopg.Error as e:
        code = e.sqlstate or "?"
        if code not in RECOPY:
            _warn_once(settings, slot.name, f"its copy cannot be advanced to {format_lsn(target)}: "
                                            f"{str(e).strip()} ({code})")
        return code
    return "advanced" if moved else ""


def _drop(settings: PgSettings, names: set[str], timeout_s: float) -> set[str]:
    dropped = set()
    for name in sorted(names):
        try:
            query(settings, "SELECT pg_drop_replication_slot(%s)", (name,), timeout_s=timeout_s)
            dropped.add(name)
            _unready.pop((settings.data_dir, name), None)
            log.info("dropped the copy of logical slot %s: no longer in the dynamic config", name)
        except PgError as e:
            _warn_once(settings, name, f"its copy could not be dropped: {e}")
    return dropped


def fetch(settings: PgSettings, source: str, wanted: Mapping[str, PermanentSlot], sysid: str,
          timeout_s: float = 10.0) -> list[SlotFile]:
    """The state files of the ``wanted`` slots on the primary at ``source`` (host and port only), read as
    the rewind role (else the superuser); a slot there with another database or plugin is skipped, and
    nothing is taken from a server whose system identifier is not ``sysid`` (logged). [] when the primary
    cannot be asked (logged): the copies wait for the next try."""
    try:
        rows = _on_primary(settings, source, timeout_s,
                           "SELECT s.slot_name, d.datname, s.plugin, "
                           "pg_read_binary_file('pg_replslot/' || s.slot_name || '/state'), "
                           "s.confirmed_flush_lsn::text, (SELECT system_identifier FROM pg_control_system())::text, "
                           "s.restart_lsn::text "
                           "FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid "
                           "WHERE s.slot_type = 'logical' AND NOT s.temporary AND NOT pg_is_in_recovery() "
                           "AND s.confirmed_flush_lsn IS NOT NULL AND s.slot_name = ANY(%s)", (sorted(wanted),))
    except (psycopg.Error, PgError, OSError) as e:
        _warn_once(settings, "*fetch", f"logical slots could not be read on the primary: {str(e).strip()}")
        return []
    files = []
    for name, database, plugin, state, confirmed, theirs, restart in rows:
        slot = wanted[str(name)]
        if theirs != sysid:
            _warn_once(settings, "*sysid", f"logical slots are not copied from {source}: it is another cluster "
                                           f"(system identifier {theirs}, this one {sysid})")
            return []
        if (database, plugin) != (slot.database, slot.plugin):
            _warn_once(settings, str(name), f"not copied: on the primary it is {database}/{plugin}, "
                                            f"the config wants {slot.database}/{slot.plugin}")
            continue
        in_memory = parse_lsn(restart) if restart else 0
        on_disk = state_restart(bytes(state))  # the state file is the last checkpoint's: maybe older
        files.append(SlotFile(str(name), str(database), str(plugin), bytes(state), parse_lsn(confirmed),
                              min(in_memory, on_disk) if on_disk else in_memory))
    return files


def state_restart(state: bytes) -> int | None:
    """The restart position written in a slot's state file (PostgreSQL's ReplicationSlotOnDisk: magic,
    checksum, version, length, then the slot's name, database, persistency, xmin, catalog_xmin and
    restart_lsn, in the server's byte order), or None when it does not look like one."""
    if len(state) < STATE_RESTART_AT + 8 or struct.unpack_from("=I", state, 0)[0] != SLOT_MAGIC:
        return None
    return int(struct.unpack_from("=Q", state, STATE_RESTART_AT)[0]) or None


def unready(settings: PgSettings) -> list[str]:
    """The copies here that are not known to be safe to decode from after a promotion yet."""
    return sorted(name for data_dir, name in _unready if data_dir == settings.data_dir)


def warn_if_unready(settings: PgSettings) -> None:
    """Called right after a promotion: name the copies not known to be safe (a consumer may fail on them)."""
    names = unready(settings)
    if names:
        log.warning("promoted with logical slot copies that may not be usable (the old primary may have removed "
                    "catalog rows they need): %s", ", ".join(names))
    for name in names:
        _unready.pop((settings.data_dir, name), None)


def check_ready(settings: PgSettings, source: str, timeout_s: float = 10.0,
                skip: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Patroni's rule: once this replica's physical slot on the primary holds a ``catalog_xmin`` (from
    ``hot_standby_feedback``), the primary's own slot's ``catalog_xmin`` at that moment is each unready
    copy's reference; the copy is safe once reference <= that physical ``catalog_xmin`` <= the copy's own.
    Copies in ``skip`` (unusable here) are not looked at. Returns the copies found ready now (each logged)."""
    pending = {name: ref for (data_dir, name), ref in _unready.items()
               if data_dir == settings.data_dir and name not in skip}
    mine = slot_name_for(settings.name)
    try:
        there = dict(_on_primary(settings, source, timeout_s,
                                 "SELECT slot_name, catalog_xmin::text::bigint FROM pg_replication_slots "
                                 "WHERE NOT pg_is_in_recovery() AND slot_name = ANY(%s)", ([mine, *pending],)))
        here = dict(query(settings, "SELECT slot_name, catalog_xmin::text::bigint FROM pg_replication_slots "
                                    "WHERE slot_name = ANY(%s)", (sorted(pending),), timeout_s=timeout_s))
    except (psycopg.Error, PgError, OSError) as e:
        _warn_once(settings, "*ready", f"cannot tell whether the logical slot copies are safe yet: {e}")
        return set()
    physical = there.get(mine)
    ready = set()
    for name, ref in sorted(pending.items()):
        if physical is None:
            _warn_once(settings, name, "its copy is not safe to use after a failover yet: the primary holds no "
                                       "catalog rows for this replica (no hot_standby_feedback from it yet)")
            continue
        if ref is None:
            ref = _unready[(settings.data_dir, name)] = there.get(name)
        copy = here.get(name)
        if ref is not None and copy is not None and ref <= physical <= copy:
            ready.add(name)
            del _unready[(settings.data_dir, name)]
            log.info("logical slot %s: its copy is safe to use after a failover (the primary keeps the catalog "
                     "rows it needs for this replica)", name)
    return ready


def _on_primary(settings: PgSettings, source: str, timeout_s: float, sql: str,
                params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """One query on the primary at ``source``, as ``_primary`` connects."""
    with _primary(settings, source, timeout_s) as conn:
        return conn.execute(sql, params).fetchall()


def _primary(settings: PgSettings, source: str, timeout_s: float) -> psycopg.Connection:
    """A connection to the primary at ``source`` (host and port only) as the rewind role (else the
    superuser), which may read the data directory's files. psycopg.Error, PgError (a bad address) or
    OSError (the pgpass file) as they come."""
    cred = settings.rewind_credentials
    conninfo = member_conninfo(source, user=cred.username, passfile=settings.pgpass, dbname="postgres",
                               connect_timeout=max(1, int(timeout_s)), **scram_params(settings, cred))
    write_pgpass(settings, server_address(source))
    conn = psycopg.connect(conninfo, autocommit=True)
    try:
        conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
    except BaseException:
        conn.close()
        raise
    return conn


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
        fsync_dir(final)
        _copied_at[(settings.data_dir, f.name)] = now
        _unready[(settings.data_dir, f.name)] = None
    fsync_dir(replslot)
    recorded = read_record(settings.data_dir, LOGICAL_RECORD) | {f.name for f in files}
    write_atomic(os.path.join(settings.data_dir, LOGICAL_RECORD), "".join(f"{n}\n" for n in sorted(recorded)))


def _warn_once(settings: PgSettings, name: str, problem: str) -> None:
    key = (settings.data_dir, name)
    if _warned.get(key) != problem:
        _warned[key] = problem
        log.warning("%s", problem if name.startswith("*") else f"logical slot {name}: {problem}")
