"""The dynamic config's permanent replication slots (``slots``), as the HA core reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")  # what PostgreSQL accepts as a replication slot name
MAX_SLOT_NAME = 63  # NAMEDATALEN - 1


def slot_name_for(member: str) -> str:
    """Member name -> the name of its physical slot on the primary: lower case, every character outside
    [a-z0-9_] becomes '_', at most 63. Two members whose names differ only in such characters ("db-1",
    "db.1") get the same slot: name members so that they do not."""
    name = re.sub(r"[^a-z0-9_]", "_", member.lower())[:MAX_SLOT_NAME]
    if not name:
        raise ValueError("member name must not be empty")
    return name


@dataclass(frozen=True)
class PermanentSlot:
    """An entry of the dynamic config's ``slots``: a replication slot the primary keeps whoever it is.
    ``database`` and ``plugin`` are set for a logical slot, None for a physical one."""

    name: str
    database: str | None = None
    plugin: str | None = None

    @property
    def logical(self) -> bool:
        return self.plugin is not None

    @classmethod
    def parse(cls, name: Any, raw: Any) -> PermanentSlot | None:
        """Lenient (the DCS reader's side): None for an entry the validator would refuse."""
        if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
            return None
        entry = raw if isinstance(raw, dict) else {} if raw is None else None
        if entry is None or entry.get("cluster_type", "primary") != "primary":
            return None  # a slot for a standby cluster's leader: raftpg runs no standby clusters
        kind = entry.get("type", "physical")
        if kind == "physical":
            return cls(name)
        database, plugin = entry.get("database"), entry.get("plugin")
        if kind == "logical" and isinstance(database, str) and database and isinstance(plugin, str) and plugin:
            return cls(name, database, plugin)
        return None
