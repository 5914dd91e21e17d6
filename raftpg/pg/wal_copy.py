"""WAL segments a replica never had, copied from the primary for a logical slot copy.

A permanent logical slot made at bootstrap (or one whose consumer is idle) keeps a restart position older
than the base backup a replica was cloned from: the replica never received that WAL, and a copy of the
slot's state alone would be unusable there after a promotion ("requested WAL segment ... has already
been removed" for the consumer). So every segment from the slot's restart position up to what this
replica replayed that is not in its ``pg_wal`` is read on the primary (``pg_ls_dir`` and
``pg_read_binary_file`` on ``pg_wal``, both granted to the rewind role, as pg_rewind needs them) into a
temporary file beside ``pg_wal``'s own, and renamed into place while PostgreSQL is stopped, with the
slot's state. Once the slot is loaded it keeps them, as it keeps any WAL it needs.

The segments are read once before the stop (short downtime) and the gap is measured again once
PostgreSQL is stopped: its shutdown restartpoint may have removed segments meanwhile, which are then
read too; a slot whose WAL is still not whole is not installed.

Copied segments are marked archived (``.done``), as the walreceiver marks what it streams with
``archive_mode = on``: they are older than this replica's base backup, and the primary archived them.
(With ``archive_mode = always`` this replica does not archive them either, by the same reasoning.)

A segment the primary recycles while it is read cannot be installed half: each chunk is read by name,
and a recycled segment is renamed first, so the read fails and the copy waits for the next try.
"""

from __future__ import annotations

import os
import re

import psycopg

from raftpg.pg.conf import fsync_dir

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
TMP_SUFFIX = ".raftpg-tmp"
CHUNK = 1 << 20
MAX_COPY = 256 << 20  # WAL bytes copied for one slot at most (two segments at least)


def max_segments(segment_size: int) -> int:
    return max(2, MAX_COPY // segment_size)


def segment_number(name: str, segment_size: int) -> int:
    """The segment number of a WAL file name (timeline, then log and segment, 8 hex digits each)."""
    return int(name[8:16], 16) * (0x1_0000_0000 // segment_size) + int(name[16:24], 16)


def local_numbers(data_dir: str, segment_size: int) -> set[int]:
    """The segment numbers of the WAL files in this data directory's ``pg_wal`` (any timeline)."""
    try:
        names = os.listdir(os.path.join(data_dir, "pg_wal"))
    except OSError:
        return set()
    return {segment_number(n, segment_size) for n in names if SEGMENT.match(n)}


def needed(restart: int, upto: int, here: set[int], segment_size: int) -> list[int]:
    """The segment numbers from ``restart``'s to the one holding the last byte before ``upto`` (a replay
    position: the end of the last record) that are not ``here``: what decoding from ``restart`` up to
    ``upto`` on this replica would miss."""
    if upto <= restart:
        return []
    return [n for n in range(restart // segment_size, (upto - 1) // segment_size + 1) if n not in here]


def clean(data_dir: str) -> None:
    """Remove the temporary files of an earlier, interrupted copy."""
    directory = os.path.join(data_dir, "pg_wal")
    for leftover in (n for n in os.listdir(directory) if TMP_SUFFIX in n):
        os.unlink(os.path.join(directory, leftover))


def fetch(conn: psycopg.Connection, data_dir: str, numbers: set[int], segment_size: int) -> set[int]:
    """Read the segments ``numbers`` (every timeline's file of each) from the primary on ``conn`` into
    temporary files (those already fetched are kept). The numbers now held in temporary files. ValueError
    names what is missing or truncated there; psycopg.Error and OSError as they come."""
    if not numbers:
        return set()
    directory = os.path.join(data_dir, "pg_wal")
    there = [str(r[0]) for r in conn.execute("SELECT f FROM pg_ls_dir('pg_wal', true, false) f").fetchall()]
    wanted = sorted(n for n in there if SEGMENT.match(n) and segment_number(n, segment_size) in numbers)
    absent = numbers - {segment_number(n, segment_size) for n in wanted}
    if absent:
        raise ValueError(f"the primary no longer has WAL segment number(s) {', '.join(map(str, sorted(absent)))}")
    here = set(os.listdir(directory))
    mode = 0o640 if os.stat(directory).st_mode & 0o070 else 0o600  # initdb --allow-group-access
    for name in wanted:
        if name not in here and name + TMP_SUFFIX not in here:
            _read_one(conn, directory, name, segment_size, mode)
    return set(numbers)


def _read_one(conn: psycopg.Connection, directory: str, name: str, segment_size: int, mode: int) -> None:
    tmp = os.path.join(directory, name + TMP_SUFFIX)
    fd = os.open(tmp + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        for offset in range(0, segment_size, CHUNK):
            row = conn.execute("SELECT pg_read_binary_file(%s, %s, %s, false)",
                               (f"pg_wal/{name}", offset, CHUNK), binary=True).fetchone()
            chunk = bytes(row[0]) if row and row[0] is not None else b""
            if len(chunk) != min(CHUNK, segment_size - offset):
                raise ValueError(f"WAL segment {name} on the primary is shorter than {segment_size} bytes")
            os.write(fd, chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp + ".part")
        raise
    os.close(fd)
    os.rename(tmp + ".part", tmp)  # whole, or not there


def install(data_dir: str) -> None:
    """Rename every fetched segment into place (PostgreSQL stopped), each marked as already archived; a
    segment already there is kept, its temporary copy removed."""
    directory = os.path.join(data_dir, "pg_wal")
    status = os.path.join(directory, "archive_status")
    names = sorted(n[: -len(TMP_SUFFIX)] for n in os.listdir(directory) if n.endswith(TMP_SUFFIX))
    for name in names:
        final = os.path.join(directory, name)
        if os.path.exists(final):
            os.unlink(final + TMP_SUFFIX)
            continue
        os.rename(final + TMP_SUFFIX, final)
        if os.path.isdir(status):
            with open(os.path.join(status, name + ".done"), "w"):
                pass
    if names:
        fsync_dir(directory)
        if os.path.isdir(status):
            fsync_dir(status)
