"""Replication slots on the primary: a physical one for each other member, named after it
(``slot_name_for``), and the dynamic config's permanent slots (``slots``), physical and logical.

raftpg drops only slots it created: their names are recorded in ``<data_dir>/raftpg.slots`` (physical;
a member's slot with the wall-clock second it was last wanted, for ``member_slots_ttl``) and
``<data_dir>/raftpg.logical-slots`` (one per line).
A slot someone else created is never dropped; an active slot is never dropped. The record travels with
pg_basebackup and pg_rewind; on a promoted replica it may name slots that do not exist there, which is
harmless (only existing, inactive, recorded, unwanted slots are dropped).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from raftpg.model import PermanentSlot
from raftpg.model.lsn import format_lsn, parse_lsn
from raftpg.model.slots import slot_name_for
from raftpg.pg.conf import write_atomic
from raftpg.pg.connection import query
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError

log = logging.getLogger(__name__)

RECORD = "raftpg.slots"
LOGICAL_RECORD = "raftpg.logical-slots"

__all__ = ["LOGICAL_RECORD", "RECORD", "advance_slots", "ensure_logical_slots", "ensure_slots", "read_record", "slot_name_for"]


def read_record(data_dir: str, record: str = RECORD) -> set[str]:
    return set(read_physical_record(data_dir, record))


def read_physical_record(data_dir: str, record: str = RECORD) -> dict[str, float | None]:
    """The slots raftpg made: name -> when (wall clock) it was last wanted as a member's slot, or None for
    a permanent slot (and for lines written before member_slots_ttl: ``name`` alone)."""
    found: dict[str, float | None] = {}
    try:
        with open(os.path.join(data_dir, record), encoding="utf-8") as f:
            for line in f:
                name, _, wanted = line.strip().partition(" ")
                if name:
                    try:
                        found[name] = float(wanted) if wanted else None
                    except ValueError:
                        found[name] = None
    except FileNotFoundError:
        pass
    return found


def ensure_slots(settings: PgSettings, names: set[str], timeout_s: float = 10.0, *,
                 members: frozenset[str] = frozenset(), retain_s: float = 0.0,
                 now: float = 0.0) -> tuple[set[str], set[str]]:
    """Create the missing slots among ``names``; drop the inactive raftpg-made slots not among them.

    ``members`` (among ``names``) are members' slots: once one is no longer wanted (its member's key is
    gone) it is kept ``retain_s`` seconds after it was last wanted (``member_slots_ttl``; ``now`` is the
    wall clock, recorded to the minute), so that a member back from maintenance finds its WAL. Returns (created, dropped). A slot
    that cannot be dropped because it became active is kept (and logged).
    """
    for name in names:
        if slot_name_for(name) != name:
            raise ValueError(f"not a valid slot name (use slot_name_for): {name!r}")
    rows = query(settings, "SELECT slot_name, active FROM pg_replication_slots "
                           "WHERE slot_type = 'physical' AND NOT temporary", timeout_s=timeout_s)
    active = {str(name): bool(is_active) for name, is_active in rows}
    created = set()
    for name in sorted(names - set(active)):
        query(settings, "SELECT pg_create_physical_replication_slot(%s, true)", (name,), timeout_s=timeout_s)
        created.add(name)
    recorded = read_physical_record(settings.data_dir)
    dropped = set()
    for name in sorted(set(recorded) & set(active) - names):
        wanted_at = recorded[name]
        if active[name]:
            log.info("replication slot %s is no longer wanted but still active: kept for now", name)
            continue
        if wanted_at is not None and retain_s > 0 and now - wanted_at < retain_s:
            continue  # an absent member's slot, within member_slots_ttl
        try:
            query(settings, "SELECT pg_drop_replication_slot(%s)", (name,), timeout_s=timeout_s)
            dropped.add(name)
            if wanted_at is not None:
                log.info("dropped replication slot %s: its member has been absent for %.0f s (member_slots_ttl)",
                         name, now - wanted_at)
        except PgError as e:
            log.warning("could not drop replication slot %s: %s", name, e)
    keep = {name: recorded[name] for name in set(recorded) & set(active) - dropped - names}
    minute = now // 60 * 60  # to the minute: the record is rewritten once a minute, not every cycle
    keep.update({name: minute if name in members else None for name in names})
    write_atomic(os.path.join(settings.data_dir, RECORD),
                 "".join(f"{n}\n" if keep[n] is None else f"{n} {keep[n]:.0f}\n" for n in sorted(keep)))
    return created, dropped


def advance_slots(settings: PgSettings, positions: Mapping[str, int], timeout_s: float = 10.0) -> set[str]:
    """Move each named physical slot forward to its position (``pg_replication_slot_advance``; on a
    standby PostgreSQL stops at what it has replayed); never backwards. Returns the slots advanced. One
    slot that cannot be advanced is logged and the others go on."""
    if not positions:
        return set()
    rows = query(settings, "SELECT slot_name, restart_lsn::text FROM pg_replication_slots "
                           "WHERE slot_type = 'physical' AND NOT temporary AND restart_lsn IS NOT NULL",
                 timeout_s=timeout_s)
    advanced = set()
    for name, at in rows:
        target = positions.get(str(name))
        if target is None or target <= parse_lsn(str(at)):
            continue
        try:
            query(settings, "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (name, format_lsn(target)),
                  timeout_s=timeout_s)
            advanced.add(str(name))
        except PgError as e:
            _warn_once(str(name), f"cannot be advanced to {format_lsn(target)}: {e}")
    return advanced


_warned: dict[str, str] = {}  # slot name -> the last problem logged for it (each logged once per change)


def _warn_once(name: str, problem: str) -> None:
    if _warned.get(name) != problem:
        _warned[name] = problem
        log.warning("replication slot %s: %s", name, problem)


def ensure_logical_slots(settings: PgSettings, slots: tuple[PermanentSlot, ...],
                         timeout_s: float = 10.0) -> tuple[set[str], set[str]]:
    """Create the missing logical ``slots`` (each in its database, with its plugin); drop the inactive
    ones raftpg made that are no longer wanted, or that exist with another database or plugin (then made
    again). Returns (created, dropped).

    Never raises for one slot: ``wal_level`` below logical, a missing database or output plugin are logged
    once per slot and problem, and the other slots go on. PgError only when the server cannot be queried.
    """
    recorded = read_record(settings.data_dir, LOGICAL_RECORD)
    if not slots and not recorded:
        return set(), set()
    rows = query(settings, "SELECT slot_name, database, plugin, active FROM pg_replication_slots "
                           "WHERE slot_type = 'logical' AND NOT temporary", timeout_s=timeout_s)
    existing = {str(name): (str(db), str(plugin), bool(is_active)) for name, db, plugin, is_active in rows}
    wanted = {slot.name: slot for slot in slots}
    created: set[str] = set()
    dropped: set[str] = set()
    for name, (database, plugin, active) in sorted(existing.items()):
        slot = wanted.get(name)
        stale = slot is None and name in recorded
        changed = slot is not None and (database, plugin) != (slot.database, slot.plugin)
        if not (stale or changed):
            continue
        if active:
            log.info("logical slot %s is %s but still active: kept for now", name,
                     "no longer wanted" if stale else "wanted with another database or plugin")
            continue
        try:
            query(settings, "SELECT pg_drop_replication_slot(%s)", (name,), timeout_s=timeout_s)
            dropped.add(name)
            why = "no longer wanted" if slot is None else \
                f"it was {database}/{plugin}, {slot.database}/{slot.plugin} is wanted: made again"
            log.info("dropped logical slot %s: %s", name, why)
        except PgError as e:
            _warn_once(name, f"could not drop it: {e}")
    missing = [slot for name, slot in sorted(wanted.items()) if name not in existing or name in dropped]
    if missing:
        wal_level = query(settings, "SHOW wal_level", timeout_s=timeout_s)[0][0]
        for slot in missing:
            if wal_level != "logical":
                _warn_once(slot.name, f"not created: it needs wal_level = logical (it is {wal_level})")
                continue
            try:
                query(settings, "SELECT pg_create_logical_replication_slot(%s, %s)", (slot.name, slot.plugin),
                      timeout_s=timeout_s, dbname=slot.database or "postgres")
                created.add(slot.name)
                _warned.pop(slot.name, None)
                log.info("created logical slot %s in database %s with plugin %s", slot.name, slot.database,
                         slot.plugin)
            except PgError as e:
                _warn_once(slot.name, f"not created in database {slot.database}: {e}")
    keep = (recorded & set(existing)) - dropped | created  # a slot dropped and made again is recorded
    keep |= {name for name in wanted if name in existing and name not in dropped}
    write_atomic(os.path.join(settings.data_dir, LOGICAL_RECORD), "".join(f"{n}\n" for n in sorted(keep)))
    return created, dropped
