"""raftpg.pg's parsers: pg_controldata, postmaster.pid, supervisor commands, conninfo, slot names."""

from __future__ import annotations

import pytest

from raftpg.pg.connection import as_role, conninfo_for, with_defaults
from raftpg.pg.controldata import parse_controldata
from raftpg.pg.pidfile import parse_pidfile
from raftpg.pg.slots import slot_name_for
from raftpg.pg.supervisor import IDLE_S, POLL_S, parse_command, wait_s
from raftpg.pg.supervisor import main as supervisor_main

CONTROLDATA_REPLICA = """\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7304563462426726143
Database cluster state:               shut down in recovery
pg_control last modified:             Sat 21 Nov 2026 08:59:51 AM UTC
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Minimum recovery ending location:     0/5000148
Min recovery ending loc's timeline:   2
this line has no known key: 0/1
"""


def test_controldata_of_a_stopped_replica_reports_its_recovery_point() -> None:
    control = parse_controldata(CONTROLDATA_REPLICA)
    assert control.sysid == "7304563462426726143"
    assert control.cluster_state == "shut down in recovery" and control.shut_down_cleanly
    assert control.checkpoint_lsn == 0x3000060 and control.checkpoint_timeline == 1
    assert control.best_position == (0x5000148, 2)


def test_controldata_of_a_primary_uses_the_checkpoint_and_tolerates_garbage() -> None:
    text = CONTROLDATA_REPLICA.replace("0/5000148", "0/0").replace("shut down in recovery", "in production")
    control = parse_controldata(text + "Latest checkpoint location: not-an-lsn\n")
    assert control.best_position == (0x3000060, 1)
    assert not control.shut_down_cleanly
    assert parse_controldata("") .sysid is None


def test_pidfile() -> None:
    text = "4242\n/data\n1700000000\n5433\n/tmp\n*\n  123 456\nready   \n"
    info = parse_pidfile(text)
    assert info is not None and (info.pid, info.port, info.socket_dir, info.status) == (4242, 5433, "/tmp", "ready")
    assert parse_pidfile("4242\n").status is None
    assert parse_pidfile("") is None and parse_pidfile("x\n") is None and parse_pidfile("-1\n") is None


@pytest.mark.parametrize("line, parsed", [
    ("deadline 1234.5", ("deadline", 1234.5)), ("deadline 0", ("deadline", 0.0)),
    ("lease 2.5", ("deadline", 102.5)), ("lease 0", ("deadline", 100.0)),  # relative to when it is read
    (" unlimited ", ("unlimited", None)), ("stop", ("stop", None)), ("detach", ("detach", None)),
])
def test_supervisor_commands(line, parsed) -> None:
    assert parse_command(line, now=100.0) == parsed


@pytest.mark.parametrize("line", ["lease", "lease -1", "lease nan", "lease inf", "lease 1 2", "STOP", "renew 3", "",
                                  "deadline", "deadline -1", "deadline nan", "deadline inf"])
def test_supervisor_rejects_malformed_commands(line) -> None:
    with pytest.raises(ValueError):
        parse_command(line)


@pytest.mark.parametrize("deadline, have_pidfd, waited", [
    (None, True, IDLE_S),        # nothing due: sleep until input or the postmaster's exit wakes it
    (100.3, True, 0.3),          # never past the deadline
    (100.0 + IDLE_S + 5, True, IDLE_S),
    (99.0, True, 0.0),           # already due: no wait at all
    (None, False, POLL_S),       # no pidfd: only a poll notices the postmaster's exit
    (100.3, False, POLL_S),
    (100.01, False, 0.01),
])
def test_supervisor_wakes_at_the_deadline_and_polls_only_without_a_pidfd(deadline, have_pidfd, waited) -> None:
    assert wait_s(deadline, 100.0, have_pidfd) == pytest.approx(waited)


def test_supervisor_usage_errors_exit_2_without_starting_anything(capfd) -> None:
    assert supervisor_main([]) == 2
    assert supervisor_main(["--"]) == 2
    assert supervisor_main(["--bogus", "--", "postgres"]) == 2
    assert supervisor_main(["--deadline", "nan", "--", "postgres"]) == 2
    assert supervisor_main(["--adopt"]) == 2 and supervisor_main(["--adopt", "x"]) == 2
    assert supervisor_main(["--adopt", "0"]) == 2 and supervisor_main(["--bogus", "--adopt", "12"]) == 2
    assert "usage" in capfd.readouterr().err


def test_slot_names_are_sanitized_member_names() -> None:
    assert slot_name_for("Node-1.eu") == "node_1_eu"
    assert slot_name_for("x" * 80) == "x" * 63
    with pytest.raises(ValueError):
        slot_name_for("")


def test_conninfo_helpers() -> None:
    info = conninfo_for("10.0.0.1", 5432, "replicator", application_name="n2", passfile="/p")
    assert "host=10.0.0.1" in info and "user=replicator" in info and "application_name=n2" in info
    merged = with_defaults("postgresql://u@h:5/db", user="other", passfile="/p")
    assert merged == "host=h port=5 user=other passfile=/p", "only host and port come from a member's conn_url"
    replication = as_role("host=h port=5 user=rewinder dbname=postgres password=x", "replicator",
                          application_name="n1")
    assert "user=replicator" in replication and "dbname" not in replication and "password" not in replication
    assert "application_name=n1" in replication and "host=h" in replication


def test_wal_timeline_is_the_newest_complete_segment(tmp_path) -> None:
    from raftpg.pg.observe import wal_timeline
    assert wal_timeline(str(tmp_path)) is None  # no pg_wal
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    assert wal_timeline(str(tmp_path)) is None
    for name in ("000000010000000000000003", "000000010000000000000004", "00000002.history",
                 "000000030000000000000004.partial", "archive_status"):
        (wal / name).write_text("")
    assert wal_timeline(str(tmp_path)) == 1  # a history file or a .partial segment is not WAL of a timeline
    (wal / "000000020000000000000004").write_text("")
    assert wal_timeline(str(tmp_path)) == 2
