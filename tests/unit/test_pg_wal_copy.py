"""The arithmetic of raftpg.pg.wal_copy (which WAL segments a logical slot copy lacks) and its clean-up and
install steps on a plain directory. The copy from a real primary is tests/integration/test_pg_logical_copies.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from raftpg.pg import wal_copy
from raftpg.pg.logical_slots import STATE_RESTART_AT, state_restart

MB16, GB1 = 16 << 20, 1 << 30


@pytest.mark.parametrize(("name", "size", "number"), [
    ("000000010000000000000001", MB16, 1),
    ("0000000300000000000000FF", MB16, 255),
    ("000000010000000100000000", MB16, 256),          # 256 segments of 16 MB per 4 GB "log"
    ("000000010000000100000002", GB1, 4 + 2),         # 4 segments of 1 GB per log
])
def test_a_file_name_gives_its_segment_number_whatever_its_timeline(name: str, size: int, number: int) -> None:
    assert wal_copy.segment_number(name, size) == number


def test_what_a_copy_lacks_is_every_absent_segment_from_its_restart_position_to_the_replay() -> None:
    assert wal_copy.needed(0x1_504_6C8, 0x4_000_100, {2, 3, 4, 5}, MB16) == [1]
    assert wal_copy.needed(0x1_504_6C8, 0x6_000_000, {4, 5, 6}, MB16) == [1, 2, 3]
    assert wal_copy.needed(0x1_504_6C8, 0x6_000_000, {1, 2, 5, 6}, MB16) == [3, 4], "a hole counts too"
    assert wal_copy.needed(2 * MB16, 3 * MB16, {2, 3}, MB16) == [], "all here"
    assert wal_copy.needed(5 * MB16, 0, set(), MB16) == [], "nothing replayed: nothing to compare"
    assert wal_copy.needed(GB1 + 8, 3 * GB1 + 8, {3}, GB1) == [1, 2]
    # a replay position at a segment boundary ends in the segment before it (the next may not exist yet)
    assert wal_copy.needed(0x1_504_6C8, 0x7_000_000, {6}, MB16) == [1, 2, 3, 4, 5]
    assert wal_copy.needed(0x7_000_000, 0x7_000_000, set(), MB16) == []


def test_at_least_two_segments_may_be_copied_whatever_their_size() -> None:
    assert wal_copy.max_segments(MB16) == 16
    assert wal_copy.max_segments(GB1) == 2


def test_the_segments_here_ignore_other_files(tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    assert wal_copy.local_numbers(str(tmp_path), MB16) == set()
    for name in ("000000020000000000000007", "000000010000000000000005", "00000002.history",
                 "000000010000000000000004.partial", "000000010000000000000003" + wal_copy.TMP_SUFFIX):
        (wal / name).write_bytes(b"")
    assert wal_copy.local_numbers(str(tmp_path), MB16) == {5, 7}
    assert wal_copy.local_numbers(str(tmp_path / "nowhere"), MB16) == set()


def test_clean_removes_whole_and_partial_temporary_copies_only(tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    for name in ("000000010000000000000001" + wal_copy.TMP_SUFFIX,
                 "000000010000000000000002" + wal_copy.TMP_SUFFIX + ".part", "000000010000000000000003"):
        (wal / name).write_bytes(b"x")
    wal_copy.clean(str(tmp_path))
    assert os.listdir(wal) == ["000000010000000000000003"]


def test_install_renames_the_fetched_segments_and_marks_them_archived(tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    (wal / ("000000010000000000000001" + wal_copy.TMP_SUFFIX)).write_bytes(b"old")
    (wal / ("000000010000000000000002" + wal_copy.TMP_SUFFIX)).write_bytes(b"copy")
    (wal / "000000010000000000000002").write_bytes(b"here already")  # never replaced
    wal_copy.install(str(tmp_path))
    assert (wal / "000000010000000000000001").read_bytes() == b"old"
    assert (wal / "000000010000000000000002").read_bytes() == b"here already"
    assert sorted(os.listdir(wal / "archive_status")) == ["000000010000000000000001.done"]
    assert not [n for n in os.listdir(wal) if wal_copy.TMP_SUFFIX in n]


def test_a_state_file_gives_its_restart_position_or_nothing() -> None:
    state = bytearray(200)
    state[0:4] = (0x1051CA1).to_bytes(4, sys.byteorder)
    state[STATE_RESTART_AT:STATE_RESTART_AT + 8] = (0x1_504_6C8).to_bytes(8, sys.byteorder)
    assert state_restart(bytes(state)) == 0x1_504_6C8
    assert state_restart(bytes(200)) is None, "not a slot's state (no magic)"
    assert state_restart(bytes(state[:50])) is None, "too short"
