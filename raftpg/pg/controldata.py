"""The data directory as seen without a running server: its state and ``pg_controldata``'s view of pg_control.

The HA loop asks for pg_control every cycle, and on a quiet node it changes only at checkpoints and state
changes: ``read_controldata`` reads the file's 8 kB and runs ``pg_controldata`` (a fork and an exec of a
program) only when the bytes differ from the last ones it ran it on (:class:`ControlFileMemo`).
"""

from __future__ import annotations

import os
import pwd
import stat
import threading
from collections import OrderedDict
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
    # the source's settings a standby may not go below (hot_standby refuses to start otherwise)
    max_connections: int | None = None
    max_worker_processes: int | None = None
    max_wal_senders: int | None = None
    max_prepared_transactions: int | None = None
    max_locks_per_transaction: int | None = None

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
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}
STANDBY_MINIMUMS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                    "max_locks_per_transaction")


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
            elif field.endswith("_timeline") or field in STANDBY_MINIMUMS:
                values[field] = int(raw)
            else:
                values[field] = raw
        except ValueError:
            continue
    return ControlData(**values)  # type: ignore[arg-type]


PG_CONTROL_FILE_SIZE = 8192  # PostgreSQL writes and pg_controldata reads pg_control as one 8 kB block


def _pg_control_bytes(data_dir: str) -> bytes | None:
    try:
        with open(os.path.join(data_dir, "global", "pg_control"), "rb") as f:
            return f.read(PG_CONTROL_FILE_SIZE)
    except OSError:
        return None


class ControlFileMemo:
    """``pg_controldata``'s answer for the pg_control bytes it last ran on, per data directory and program.

    What pg_controldata prints is a function of pg_control's bytes and of the program itself, so an answer
    is reused exactly when the file holds the same bytes as when it was computed: nothing is judged by
    modification times (whose granularity could hide a second write) and nothing is trusted for a while.
    An answer is remembered only if the file read the same before and after the program ran (it was not
    rewritten meanwhile). A file that cannot be read is never answered from memory. Thread-safe; keeps the
    ``entries_max`` data directories used last.
    """

    def __init__(self, entries_max: int = 8) -> None:
        self.entries_max = entries_max
        self.runs = 0  # how many times pg_controldata ran (for tests and benches)
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, ControlData]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, settings: PgSettings, timeout_s: float) -> ControlData:
        key = (os.path.abspath(settings.data_dir), settings.binary("pg_controldata"))
        before = _pg_control_bytes(settings.data_dir)
        if before is not None:
            with self._lock:
                known = self._entries.get(key)
                if known is not None and known[0] == before:
                    self._entries.move_to_end(key)
                    return known[1]
        control = parse_controldata(run_tool(settings, "pg_controldata", ["-D", settings.data_dir], timeout_s))
        with self._lock:
            self.runs += 1
            if before is not None and _pg_control_bytes(settings.data_dir) == before:
                self._entries[key] = (before, control)
                self._entries.move_to_end(key)
                while len(self._entries) > self.entries_max:
                    self._entries.popitem(last=False)
        return control


MEMO = ControlFileMemo()


def read_controldata(settings: PgSettings, timeout_s: float = 10.0,
                     memo: ControlFileMemo | None = None) -> ControlData:
    """pg_controldata's view of the data directory (run again only when pg_control changed: ``memo``,
    by default this process's). Raises PgError if it cannot read pg_control."""
    return (memo or MEMO).read(settings, timeout_s)


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


def data_dir_problem(data_dir: str, server_major: int | None, uid: int | None = None) -> str | None:
    """Why PostgreSQL would refuse this existing data directory, as one line naming ``postgresql.data_dir``;
    None if nothing visible without starting it is wrong (a missing or empty directory is not a problem).

    Checked, in order: the owner is the agent's user (``uid``, default: this process's), the mode gives no
    write to the group and nothing to others (PostgreSQL wants 0700 or 0750), and ``PG_VERSION`` names the
    same major version as ``server_major`` (the binaries in ``postgresql.bin_dir``; None: not checked).
    A wrong major version passes ``pg_controldata`` (pg_control's format is shared across releases), so
    without this check it shows only as a postmaster that exits at every start.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.stat(data_dir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"postgresql.data_dir: cannot read {data_dir}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"postgresql.data_dir: {data_dir} is not a directory"
    if st.st_uid != uid:
        return (f"postgresql.data_dir: {data_dir} is owned by {_user(st.st_uid)}, not by {_user(uid)} who runs "
                "the agent; PostgreSQL refuses a data directory it does not own")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o027:
        return (f"postgresql.data_dir: {data_dir} has mode {mode:04o}; PostgreSQL needs 0700 (or 0750): "
                f"chmod 0700 {data_dir}")
    try:
        with open(os.path.join(data_dir, "PG_VERSION"), encoding="ascii", errors="replace") as f:
            text = f.read(16).strip()
    except FileNotFoundError:
        return None  # empty, or not a data directory at all: data_dir_state says which
    except OSError as exc:
        return f"postgresql.data_dir: cannot read {data_dir}/PG_VERSION: {exc.strerror or exc}"
    if not text.isdigit():
        return f"postgresql.data_dir: {data_dir}/PG_VERSION holds {text[:16]!r}, not a PostgreSQL major version"
    if server_major is not None and int(text) != server_major:
        return (f"postgresql.data_dir: {data_dir} holds PostgreSQL {text} data but postgresql.bin_dir runs "
                f"PostgreSQL {server_major}; set bin_dir to the version {text} binaries (or pg_upgrade first)")
    return None


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
