"""The data directory as seen without a running server: its state and ``pg_controldata``'s view of pg_control."""

from __future__ import annotations

import os
from dataclasses import dataclass

from raftpg.model import DataDir, parse_lsn
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError, run_tool

CLEAN_SHUTDOWN_STATES = ("shut down", "shut down in recovery")


@dataclass(frozen=True)
class ControlData:
    sysid: str | None = None
    cluster_state: str | None = None
    checkpoint_lsn: int | None = None
    checkpoint_timeline: int | None = None
    min_recovery_lsn: int | None = None        # how far a stopped replica had replayed (0 on a primary)
    min_recovery_timeline: int | None = None

    @property
    def best_position(self) -> tuple[int | None, int | None]:
        """(lsn, timeline): the later of the checkpoint and the minimum recovery point."""
        if self.min_recovery_lsn and self.checkpoint_lsn is not None and self.min_recovery_lsn > self.checkpoint_lsn:
            return self.min_recovery_lsn, self.min_recovery_timeline or self.checkpoint_timeline
        return self.checkpoint_lsn, self.checkpoint_timeline

    @property
    def shut_down_cleanly(self) -> bool:
        return self.cluster_state in CLEAN_SHUTDOWN_STATES


_FIELDS = {
    "Database system identifier": "sysid",
    "Database cluster state": "cluster_state",
    "Latest checkpoint location": "checkpoint_lsn",
    "Latest checkpoint's TimeLineID": "checkpoint_timeline",
    "Minimum recovery ending location": "min_recovery_lsn",
    "Min recovery ending loc's timeline": "min_recovery_timeline",
}


def parse_controldata(text: str) -> ControlData:
    """Parse pg_controldata's output (C locale). Unknown or malformed lines are ignored, never fatal."""
    values: dict[str, object] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition(":")
        field = _FIELDS.get(key.strip())
        if not sep or field is None:
            continue
        raw = raw.strip()
        try:
            if field.endswith("_lsn"):
                values[field] = parse_lsn(raw)
            elif field.endswith("_timeline"):
                values[field] = int(raw)
            else:
                values[field] = raw
        except ValueError:
            continue
    return ControlData(**values)  # type: ignore[arg-type]


def read_controldata(settings: PgSettings, timeout_s: float = 10.0) -> ControlData:
    """Run pg_controldata on the data directory. Raises PgError if it cannot read pg_control."""
    return parse_controldata(run_tool(settings, "pg_controldata", ["-D", settings.data_dir], timeout_s))


def data_dir_state(settings: PgSettings, timeout_s: float = 10.0) -> tuple[DataDir, ControlData | None]:
    """MISSING, EMPTY, INITIALIZED (PG_VERSION and a readable pg_control) or BROKEN (anything else)."""
    path = settings.data_dir
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        return DataDir.MISSING, None
    except OSError:
        return DataDir.BROKEN, None
    if not entries:
        return DataDir.EMPTY, None
    if "PG_VERSION" not in entries or not os.path.exists(os.path.join(path, "global", "pg_control")):
        return DataDir.BROKEN, None
    try:
        control = read_controldata(settings, timeout_s)
    except PgError:
        return DataDir.BROKEN, None
    return (DataDir.INITIALIZED if control.sysid else DataDir.BROKEN), control
