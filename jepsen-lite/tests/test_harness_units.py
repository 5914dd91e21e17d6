"""Pure parts of the harness: the seeded schedule, nemesis names, outcome classification, the report."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from jepsen_lite import cli
from jepsen_lite.checkers import check_all
from jepsen_lite.nemesis import FAULTS, GROUPS, expand, make_schedule, schedule_json
from jepsen_lite.report import write_report
from jepsen_lite.workloads import KvClient, classify_error
from jl_builders import Builder


def test_same_seed_same_schedule_and_every_fault_each_round() -> None:
    faults = expand("kill,partition-halves,pause,clock")
    a = make_schedule(faults, seed=7, total_s=300, ttl_s=10)
    assert schedule_json(a) == schedule_json(make_schedule(faults, seed=7, total_s=300, ttl_s=10))
    assert schedule_json(a) != schedule_json(make_schedule(faults, seed=8, total_s=300, ttl_s=10))
    assert sorted(s.fault for s in a[: len(faults)]) == sorted(faults)
    assert [s.index for s in a] == list(range(len(a)))


def test_pause_is_mostly_longer_than_the_ttl_and_unfenced_always() -> None:
    steps = make_schedule(["pause"], seed=1, total_s=2000, ttl_s=10)
    assert sum(s.hold_s > 10 for s in steps) > len(steps) / 2
    assert all(s.hold_s > 20 for s in make_schedule(["pause-unfenced"], seed=1, total_s=500, ttl_s=10))


def test_expand_groups_and_filters_by_cluster_kind() -> None:
    assert expand("kill") == ["kill-agent", "kill-postgres", "kill-node"]
    assert "pause-unfenced" not in expand("all") and "pause-unfenced" in FAULTS
    assert set(GROUPS["partition"]) <= set(expand("all"))
    assert expand("kill,switchover,partition-halves", kind="kv") == ["kill-agent", "partition-halves"]
    with pytest.raises(ValueError, match="unknown nemesis"):
        expand("kill,nonsense")


def test_insert_outcomes_are_fail_only_when_definite() -> None:
    assert classify_error(psycopg.OperationalError("connection refused"), sent=False) == "fail"
    assert classify_error(psycopg.OperationalError("server closed the connection"), sent=True) == "info"
    assert classify_error(psycopg.errors.ReadOnlySqlTransaction("read-only"), sent=True) == "fail"
    assert classify_error(psycopg.errors.AdminShutdown("terminating"), sent=True) == "info"
    assert classify_error(TimeoutError(), sent=True) == "info"


@pytest.mark.parametrize(("f", "status", "answer", "expected"), [
    ("write", "refused", "ECONNREFUSED", "fail"),
    ("write", "lost", "timed out", "info"),
    ("read", "lost", "timed out", "fail"),
    ("write", "ok", (200, {"ok": True}), "ok"),
    ("cas", "ok", (200, {"ok": False, "guard": "value"}), "fail"),
    ("write", "ok", (503, {"error": "no_quorum", "indeterminate": False}), "fail"),
    ("write", "ok", (503, {"error": "no_quorum", "indeterminate": True}), "info"),
    ("cas", "ok", (409, {"error": "unknown_outcome", "indeterminate": True}), "info"),
    ("write", "ok", (500, {"error": "internal"}), "info"),
])
def test_register_outcomes(f: str, status: str, answer: object, expected: str) -> None:
    assert KvClient._outcome(f, 1, status, answer)[0] == expected


def test_register_read_returns_the_value_or_none() -> None:
    assert KvClient._outcome("read", None, "ok", (200, {"kv": {"value": "3"}}))[:2] == ("ok", 3)
    assert KvClient._outcome("read", None, "ok", (200, {"kv": None}))[:2] == ("ok", None)


def test_report_and_legacy_check_command(tmp_path: Path) -> None:
    b = Builder()
    b.nemesis("kill-agent", {"phase": "start", "id": 0}, 1.0)
    b.op(0, "insert", 1, 0.5, 0.6, node="n1", primary="n1", timeline=1, sysid="s")
    b.op(1, "insert", 2, 1.2, 1.3, node="n2", type="fail")
    b.op(0, "insert", 3, 2.0, 2.1, node="n2", primary="n2", timeline=2, sysid="s")
    b.nemesis("kill-agent", {"phase": "stop", "id": 0}, 3.0)
    b.op(5, "read-all", None, 4.0, 4.1, node="n2", result=[1, 3])
    history = b.build()
    path = write_report(tmp_path, history, check_all(history), [("kill-agent", True, "{}")])
    assert "timeline.png" in path.read_text() and (tmp_path / "timeline.png").stat().st_size > 1000
    history.write(tmp_path / "h.jsonl")
    assert cli.main(["check", str(tmp_path / "h.jsonl"), "--min-acked", "1"]) == 0
    assert cli.main([str(tmp_path / "h.jsonl"), "--min-acked", "1"]) == 0
