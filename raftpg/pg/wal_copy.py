"""WAL segments a replica never had, copied from the primary for a logical slot copy.

A permanent logical slot made at bootstrap (or one whose consumer is idle) keeps a restart position older
than the base backup a replica was cloned from: the replica never received that WAL, and a copy of the
slot's state alone would be unusable there after a promotion ("requested WAL segment ... has already
been removed" for the consumer). So the segments between the slot's restart position and the oldest
segment this replica holds are read on the primary (``pg_ls_dir`` and ``pg_read_binary_file`` on
``pg_wal``, both granted to the rewind role, as pg_rewind needs them) into temporary files beside
``pg_wal``'s own, and renamed into place while PostgreSQL is stopped, with the slot's state. Once the
slot is loaded it keeps them, as it keeps any WAL it needs.

A segment that the primary recycles while it is being read cannot be copied half: each chunk is read by
name and a recycled segment is renamed first, so the read fails and the copy waits for the next try.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import psycopg

from raftpg.pg.conf import fsync_dir

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
TMP_SUFFIX = ".raftpg-tmp"
CHUNK = 1 << 20
MAX_COPY = 256 << 20  # WAL bytes copied for one slot at most; a longer gap waits for the consumer


def segment_number(name: str, segment_size: int) -> int:
    """The segment number of a WAL file name (timeline, then log and segment, 8 hex digits each)."""
    return int(name[8:16], 16) * (0x1_0000_0000 // segment_size) + int(name[16:24], 16)


def oldest_local(data_dir: str, segment_size: int) -> int | None:
    """The first LSN of the oldest WAL segment in this data directory's ``pg_wal`` (any timeline), or None."""
    try:
        names = [n for n in os.listdir(os.path.join(data_dir, "pg_wal")) if SEGMENT.match(n)]
    except OSError:
        return None
    return min(segment_number(n, segment_size) for n in names) * segment_size if names else None


@dataclass(frozen=True)
class Segments:
    """Segments read into temporary files in ``pg_wal``, to be renamed into place by ``install``."""

    directory: str
    names: tuple[str, ...]


def missing(restart: int, oldest: int | None, segment_size: int) -> range:
    """The segment numbers from ``restart``'s up to (not including) the oldest one here."""
    if oldest is None or restart >= oldest:
        return range(0)
    return range(restart // segment_size, oldest // segment_size)


def fetch(conn: psycopg.Connection, data_dir: str, numbers: range, segment_size: int) -> Segments:
    """Read the segments ``numbers`` (every timeline's file of each) from the primary on ``conn`` into
    temporary files. ValueError names what is missing or truncated there; psycopg.Error and OSError as
    they come. Temporary files of an earlier try are removed first."""
    directory = os.path.join(data_dir, "pg_wal")
    for leftover in (n for n in os.listdir(directory) if n.endswith(TMP_SUFFIX)):
        os.unlink(os.path.join(directory, leftover))
    there = [str(r[0]) for r in conn.execute("SELECT f FROM pg_ls_dir('pg_wal', true, false) f").fetchall()]
    wanted = sorted(n for n in there if SEGMENT.match(n) and segment_number(n, segment_size) in numbers)
    found = {segment_number(n, segment_size) for n in wanted}
    if found != set(numbers):
        absent = sorted(set(numbers) - found)
        raise ValueError(f"the primary no longer has WAL segment number(s) {', '.join(map(str, absent))}")
    here = set(os.listdir(directory))
    names = tuple(n for n in wanted if n not in here)
    for name in names:
        _read_one(conn, directory, name, segment_size)
    return Segments(directory, names)


def _read_one(conn: psycopg.Connection, directory: str, name: str, segment_size: int) -> None:
    tmp = os.path.join(directory, name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for offset in range(0, segment_size, CHUNK):
            row = conn.execute("SELECT pg_read_binary_file(%s, %s, %s, false)",
                               (f"pg_wal/{name}", offset, CHUNK), binary=True).fetchone()
            chunk = bytes(row[0]) if row and row[0] is not None else b""
            if len(chunk) != min(CHUNK, segment_size - offset):
                raise ValueError(f"WAL segment {name} on the primary is shorter than {segment_size} bytes")
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def install(segments: Segments) -> None:
    """Rename the fetched segments into place (PostgreSQL stopped), each marked as already archived."""
    status = os.path.join(segments.directory, "archive_status")
    for name in segments.names:
        final = os.path.join(segments.directory, name)
        if os.path.exists(final):
            os.unlink(final + TMP_SUFFIX)
            continue
        os.rename(final + TMP_SUFFIX, final)
        if os.path.isdir(status):
            with open(os.path.join(status, name + ".done"), "w"):
                pass
    if segments.names:
        fsync_dir(segments.directory)
        if os.path.isdir(status):
            fsync_dir(status)
