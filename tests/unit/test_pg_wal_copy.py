"""The arithmetic of raftpg.pg.wal_copy (which WAL segments a logical slot copy lacks) and its install
step on a plain directory. The copy from a real primary is tests/integration/test_pg_logical_copies.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftpg.pg import wal_copy

MB16 = 16 << 20


@pytest.mark.parametrize(("name", "size", "number"), [
    ("000000010000000000000001", MB16, 1),
    ("0000000300000000000000FF", MB16, 255),
    ("000000010000000100000000", MB16, 256),          # 256 segments of 16 MB per 4 GB "log"
    ("000000010000000100000002", 1 << 30, 4 + 2),     # 4 segments of 1 GB per log
])
def test_a_file_name_gives_its_segment_number_whatever_its_timeline(name: str, size: int, number: int) -> None:
    assert wal_copy.segment_number(name, size) == number


def test_only_the_segments_before_the_oldest_one_here_are_missing() -> None:
    assert wal_copy.missing(0x1_504_6C8, 2 * MB16, MB16) == range(1, 2)
    assert wal_copy.missing(0x1_504_6C8, 4 * MB16, MB16) == range(1, 4)
    assert wal_copy.missing(2 * MB16, 2 * MB16, MB16) == range(0), "its segment is here"
    assert wal_copy.missing(5 * MB16 + 8, 2 * MB16, MB16) == range(0)
    assert wal_copy.missing(0x1_504_6C8, None, MB16) == range(0), "no WAL here at all: nothing to compare"


def test_the_oldest_segment_here_ignores_other_files(tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    assert wal_copy.oldest_local(str(tmp_path), MB16) is None
    for name in ("000000020000000000000007", "000000010000000000000005", "00000002.history",
                 "000000010000000000000004.partial", "000000010000000000000003.raftpg-tmp"):
        (wal / name).write_bytes(b"")
    assert wal_copy.oldest_local(str(tmp_path), MB16) == 5 * MB16
    assert wal_copy.oldest_local(str(tmp_path / "nowhere"), MB16) is None


def test_install_renames_the_fetched_segments_and_marks_them_archived(tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    (wal / ("000000010000000000000001" + wal_copy.TMP_SUFFIX)).write_bytes(b"old")
    (wal / ("000000010000000000000002" + wal_copy.TMP_SUFFIX)).write_bytes(b"copy")
    (wal / "000000010000000000000002").write_bytes(b"here already")  # never replaced
    wal_copy.install(wal_copy.Segments(str(wal), ("000000010000000000000001", "000000010000000000000002")))
    assert (wal / "000000010000000000000001").read_bytes() == b"old"
    assert (wal / "000000010000000000000002").read_bytes() == b"here already"
    assert sorted(os.listdir(wal / "archive_status")) == ["000000010000000000000001.done"]
    assert not [n for n in os.listdir(wal) if n.endswith(wal_copy.TMP_SUFFIX)]
