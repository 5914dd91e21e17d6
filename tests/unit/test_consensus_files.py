"""A Raft node's files and process limits: raft.data_dir modes and owners (datadir.py), the journal on a
full disk (journal.py, diskspace.py), the open-files limit (limits.py), adding members (settings.py).
Files live under tmp_path; a full disk is simulated by making the reservation fail."""

from __future__ import annotations

import errno
import os
import resource
import stat

import pytest
from pysyncobj.journal import MetaStorer

from raftpg.consensus import KvRejected, limits
from raftpg.consensus import journal as journal_module
from raftpg.consensus.datadir import secure_data_dir
from raftpg.consensus.diskspace import DiskSpace
from raftpg.consensus.journal import RESERVE_AHEAD_BYTES, GuardedJournal, JournalFull
from raftpg.consensus.raft import RaftNode
from raftpg.consensus.recovery import RaftFiles
from raftpg.consensus.settings import RaftConfigError, RaftSettings, check_can_add_member


@pytest.mark.parametrize(("soft", "hard", "nr_open", "expected"), [
    (1024, 524288, 1048576, 524288),  # raised to the hard limit
    (1024, resource.RLIM_INFINITY, 1048576, 1048576),  # an unlimited hard limit: the kernel's ceiling
    (4096, 2048, 1048576, 4096),  # never lowered (a soft limit over the hard one cannot happen; stay put)
    (65536, 65536, 1048576, 65536),  # nothing to do
])
def test_the_open_files_limit_is_raised_to_the_hard_limit(monkeypatch, soft, hard, nr_open, expected):
    calls = []
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _which: (soft, hard))
    monkeypatch.setattr(limits.resource, "setrlimit", lambda _which, pair: calls.append(pair))
    monkeypatch.setattr(limits, "_nr_open", lambda: nr_open)
    assert limits.raise_open_files_limit() == expected
    assert calls == ([(expected, hard)] if expected != soft else [])


def test_a_refused_raise_is_logged_not_raised(monkeypatch, caplog):
    def refuse(_which, _pair):
        raise ValueError("not allowed")

    monkeypatch.setattr(limits.resource, "getrlimit", lambda _which: (1024, 4096))
    monkeypatch.setattr(limits.resource, "setrlimit", refuse)
    monkeypatch.setattr(limits, "_nr_open", lambda: None)
    assert limits.raise_open_files_limit() == 1024
    assert "cannot raise the open-files limit from 1024 to 4096" in caplog.text


# ------------------------------------------------------------------------------------------ raft.data_dir


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "raft"
    path.mkdir(mode=0o700)
    return path


def test_a_missing_data_dir_is_created_private(tmp_path):
    path = tmp_path / "a" / "raft"
    secure_data_dir(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_what_others_can_merely_read_is_made_private(data_dir):
    data_dir.chmod(0o755)
    journal = data_dir / "127.0.0.1_7001.journal"
    journal.write_bytes(b"x")
    journal.chmod(0o644)
    aside = data_dir / "before-force-new-cluster-1"
    aside.mkdir(mode=0o750)
    secure_data_dir(str(data_dir))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert stat.S_IMODE(aside.stat().st_mode) == 0o700


@pytest.mark.parametrize(("target", "mode"), [("dir", 0o770), ("dir", 0o707), ("file", 0o660), ("file", 0o646)])
def test_anything_writable_by_others_refuses_to_start_and_changes_nothing(data_dir, target, mode):
    journal = data_dir / "127.0.0.1_7001.journal"
    journal.write_bytes(b"x")
    journal.chmod(0o644)
    path = data_dir if target == "dir" else journal
    path.chmod(mode)
    with pytest.raises(RaftConfigError) as refused:
        secure_data_dir(str(data_dir))
    message = str(refused.value)
    assert message.startswith("raft.data_dir: ") and "\n" not in message
    assert f"{path} is writable by group or others (mode {mode:04o})" in message
    assert stat.S_IMODE(path.stat().st_mode) == mode  # not silently "fixed": someone may have altered it
    assert stat.S_IMODE(journal.stat().st_mode) in (0o644, mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_file_of_another_user_refuses_to_start(data_dir):
    meta = data_dir / "127.0.0.1_7001.journal.meta"
    meta.write_bytes(b"x")
    os.chown(meta, 65534, 65534)
    with pytest.raises(RaftConfigError, match=r"^raft\.data_dir: .*journal\.meta is owned by .*uid 65534"):
        secure_data_dir(str(data_dir))


def test_a_symbolic_link_inside_refuses_to_start(data_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere.journal"
    elsewhere.write_bytes(b"x")
    (data_dir / "127.0.0.1_7001.journal").symlink_to(elsewhere)
    with pytest.raises(RaftConfigError, match=r"^raft\.data_dir: .* is a symbolic link"):
        secure_data_dir(str(data_dir))


def test_the_node_files_it_writes_are_private(data_dir):
    files = RaftFiles.for_node(str(data_dir), "127.0.0.1:7001")
    files.remember_members("127.0.0.1:7001", ["127.0.0.1:7002"])
    assert stat.S_IMODE(os.stat(files.members).st_mode) == 0o600
    journal = GuardedJournal(files.journal)
    try:
        journal.setCurrentTerm(3, None)
        assert stat.S_IMODE(os.stat(files.journal).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(files.journal + ".meta").st_mode) == 0o600
    finally:
        journal._destroy()


# ------------------------------------------------------------------------------------------ full disk


class Reports:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def report_full(self, what: str, exc: OSError) -> None:
        self.seen.append(f"{what}: {exc.strerror}")


def test_the_journal_reserves_the_blocks_it_may_grow_into(data_dir):
    path = str(data_dir / "j.journal")
    journal = GuardedJournal(path)
    try:
        st = os.stat(path)
        assert st.st_size < RESERVE_AHEAD_BYTES <= st.st_blocks * 512  # allocated beyond the size
        for i in range(200):
            journal.add(b"\x00" + b"c" * 1000, i + 1, 1)
        assert os.stat(path).st_blocks * 512 >= 2 * os.stat(path).st_size
    finally:
        journal._destroy()
    reopened = GuardedJournal(path)
    try:
        assert [reopened[i][1] for i in range(len(reopened))] == list(range(1, 201))
    finally:
        reopened._destroy()


def no_space(_fd, _length):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_append_without_room_is_refused_before_anything_is_written(data_dir, monkeypatch):
    path = str(data_dir / "j.journal")
    reports = Reports()
    journal = GuardedJournal(path, reports)
    try:
        journal.add(b"\x00first", 1, 1)
        before = open(path, "rb").read()
        monkeypatch.setattr(journal_module, "reserve", no_space)
        journal._reserved_bytes = 0  # as if the file had grown past what was reserved
        with pytest.raises(JournalFull):
            journal.add(b"\x00second", 2, 1)
        assert len(journal) == 1 and open(path, "rb").read() == before
        assert reports.seen and "No space left on device" in reports.seen[0]
        with pytest.raises(JournalFull):  # compaction checks first: it never clears and then fails
            journal.deleteEntriesTo(1)
        assert len(journal) == 1
    finally:
        journal._destroy()


def test_a_term_that_cannot_be_stored_raises_and_the_commit_index_is_skipped(data_dir, monkeypatch):
    reports = Reports()
    journal = GuardedJournal(str(data_dir / "j.journal"), reports)

    def store_fails(self, meta):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    try:
        monkeypatch.setattr(MetaStorer, "storeMeta", store_fails)
        with pytest.raises(OSError):  # pysyncobj must not send the vote it could not store
            journal.setCurrentTerm(4, "127.0.0.1:7002")
        journal.setRaftCommitIndex(9)
        journal.onOneSecondTimer()  # advisory: reported, not raised
        assert len(reports.seen) == 2
    finally:
        journal._destroy()


class FakeStatvfs:
    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, _path):
        return os.statvfs_result((4096, 4096, 1 << 20, 0, self.free // 4096, 0, 0, 0, 0, 255))


def test_disk_space_goes_full_under_the_minimum_and_back_at_twice_it():
    failures, statvfs = [], FakeStatvfs(100 << 20)
    space = DiskSpace("/raft", 16 << 20, failures.append, statvfs)
    rejoin = {"ok": True}
    assert space.poll(0.0, lambda: rejoin["ok"]) is None and space.full is None
    statvfs.free = 8 << 20
    assert space.poll(0.5, lambda: True) is None  # checked once a second
    assert space.poll(1.0, lambda: True) == "full"
    assert space.full.startswith("raft.data_dir /raft: the filesystem is full (8388608 bytes free")
    statvfs.free = 20 << 20
    assert space.poll(2.0, lambda: True) is None  # over the minimum, but not twice it
    statvfs.free = 40 << 20
    rejoin["ok"] = False  # e.g. pysyncobj still acts as a leader
    assert space.poll(3.0, lambda: rejoin["ok"]) is None
    rejoin["ok"] = True
    assert space.poll(4.0, lambda: rejoin["ok"]) == "back" and space.full is None
    assert failures == []


def test_a_reported_failure_cuts_the_node_off_at_once():
    failures = []
    space = DiskSpace("/raft", 16 << 20, failures.append, FakeStatvfs(100 << 20))
    space.report_full("writing the term", OSError(errno.ENOSPC, "No space left on device"))
    assert space.full and "writing the term: No space left on device" in space.full
    assert failures == [space.full]


# ------------------------------------------------------------------------------------------ membership


def test_adding_a_member_needs_a_password():
    open_cluster = RaftSettings(self_addr="127.0.0.1:7001", partner_addrs=(), data_dir=None)
    with pytest.raises(RaftConfigError, match=r"^raft\.password: adding the member 127\.0\.0\.1:7009 is refused"):
        check_can_add_member(open_cluster, "127.0.0.1:7009")
    check_can_add_member(RaftSettings(self_addr="127.0.0.1:7001", partner_addrs=(), data_dir=None,
                                      password="secret"), "127.0.0.1:7009")
    node = RaftNode.__new__(RaftNode)  # the check comes before anything touches Raft
    node.settings = open_cluster
    with pytest.raises(KvRejected, match="raft.password"):
        node.add_member("127.0.0.1:7009")


def test_a_raft_node_refuses_to_run_without_a_password_on_loopback_too():
    """Safety rule 9: any local user can reach a loopback port, and pysyncobj unpickles every frame."""
    with pytest.raises(RaftConfigError, match=r"^raft\.password: required, also on 127\.0\.0\.1:7001"):
        RaftSettings(self_addr="127.0.0.1:7001", partner_addrs=(), data_dir=None).check()
    RaftSettings(self_addr="127.0.0.1:7001", partner_addrs=(), data_dir=None, password="s").check()


def test_the_default_raft_timers_pass_pysyncobjs_own_checks() -> None:
    """pysyncobj checks its settings with bare asserts at construction (an election timeout of exactly three
    heartbeats failed with an empty message): the defaults must pass them, and a failure must name itself."""
    from raftpg.consensus.raft import RaftNode, RaftSettings
    from raftpg.consensus.settings import RaftConfigError

    settings = RaftSettings(self_addr="127.0.0.1:47001", partner_addrs=("127.0.0.1:47002",), data_dir=None,
                            password="x")
    conf = RaftNode._conf(settings)
    conf.validate()
    assert conf.appendEntriesPeriod == settings.heartbeat_s and conf.autoTickPeriod == settings.tick_s
    assert conf.raftMinTimeout > 3 * conf.appendEntriesPeriod
    bad = RaftSettings(self_addr="127.0.0.1:47001", partner_addrs=("127.0.0.1:47002",), data_dir=None,
                       password="x", election_timeout_min_s=0.6, heartbeat_s=0.2)
    from raftpg.clock import SystemClock
    with pytest.raises(RaftConfigError, match=r"could not start on 127\.0\.0\.1:47001: AssertionError\(\)"):
        RaftNode(bad, SystemClock())
