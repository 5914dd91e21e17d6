"""Physical replication slots for the other members, named after them (``slot_name_for``).

raftpg drops only slots it created: their names are recorded in ``<data_dir>/raftpg.slots`` (one per line).
A slot someone else created is never dropped; an active slot is never dropped. The record travels with
pg_basebackup and pg_rewind; on a promoted replica it may name slots that do not exist there, which is
harmless (only existing, inactive, recorded, unwanted slots are dropped).
"""

from __future__ import annotations

import logging
import os
import re

from raftpg.pg.conf import write_atomic
from raftpg.pg.connection import query
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError

log = logging.getLogger(__name__)

RECORD = "raftpg.slots"
MAX_SLOT_NAME = 63  # NAMEDATALEN - 1


def slot_name_for(member: str) -> str:
    """Member name -> slot name: lower case, every character outside [a-z0-9_] becomes '_', at most 63.

    Two members whose names differ only in such characters ("db-1", "db.1") get the same slot: name members
    so that they do not.
    """
    name = re.sub(r"[^a-z0-9_]", "_", member.lower())[:MAX_SLOT_NAME]
    if not name:
        raise ValueError("member name must not be empty")
    return name


def read_record(data_dir: str) -> set[str]:
    try:
        with open(os.path.join(data_dir, RECORD), encoding="utf-8") as f:
            return {line.strip() for line in f if line.strip()}
    except FileNotFoundError:
        return set()


def ensure_slots(settings: PgSettings, names: set[str], timeout_s: float = 10.0) -> tuple[set[str], set[str]]:
    """Create the missing slots among ``names``; drop the inactive raftpg-made slots not among them.

    Returns (created, dropped). A slot that cannot be dropped because it became active is kept (and logged).
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
    recorded = read_record(settings.data_dir)
    dropped = set()
    for name in sorted(recorded & set(active) - names):
        if active[name]:
            log.info("replication slot %s is no longer wanted but still active: kept for now", name)
            continue
        try:
            query(settings, "SELECT pg_drop_replication_slot(%s)", (name,), timeout_s=timeout_s)
            dropped.add(name)
        except PgError as e:
            log.warning("could not drop replication slot %s: %s", name, e)
    keep = (recorded & set(active) | names) - dropped
    write_atomic(os.path.join(settings.data_dir, RECORD), "".join(f"{n}\n" for n in sorted(keep)))
    return created, dropped
