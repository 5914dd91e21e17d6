"""Pure parts of the harness: the seeded schedule, nemesis names, outcome classification, the report."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jepsen_lite import cli
from jepsen_lite.checkers import check_all
from jepsen_lite.faults_admin import Switchover, eligible_candidates, not_eligible_yet
from jepsen_lite.faults_dcs import draw_poison
from jepsen_lite.nemesis import FAULTS, GROUPS, expand, make_schedule, needs, schedule_json
from jepsen_lite.report import write_report
from jepsen_lite.topology import Cut, Topology
from jepsen_lite.workloads import INSERT_SQL, KvClient, classify_error, identity
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


# ------------------------------------------------------------------ issue 11: overlap, loss rules, identity


def test_overlap_one_replays_the_old_schedules_and_k_adds_companions() -> None:
    faults = expand("partition-halves,pause,clock,kill-agent,packet-loss,switchover")
    single = make_schedule(faults, seed=5, total_s=600, ttl_s=10)
    assert all(not s.overlap for s in single)
    assert schedule_json(single) == schedule_json(make_schedule(faults, seed=5, total_s=600, ttl_s=10, overlap=1))
    multi = make_schedule(faults, seed=5, total_s=2000, ttl_s=10, overlap=3)
    assert schedule_json(multi) == schedule_json(make_schedule(faults, seed=5, total_s=2000, ttl_s=10, overlap=3))
    with_companions = [s for s in multi if s.overlap]
    assert with_companions and max(len(s.overlap) for s in multi) <= 2
    for step in multi:
        names = [step.fault] + [c.fault for c in step.overlap]
        assert len(set(names)) == len(names), "never the same fault twice at once"
        if step.overlap:
            assert not FAULTS[step.fault].exclusive and not any(FAULTS[c.fault].exclusive for c in step.overlap)
            assert step.hold_s >= max(c.offset_s + c.hold_s for c in step.overlap)
    ids = [s.index for s in multi] + [c.index for s in multi for c in s.overlap]
    assert len(ids) == len(set(ids)), "fault ids stay unique (start/stop pairing)"


def test_expand_drops_faults_the_backend_cannot_take() -> None:
    assert "poison-dcs" not in expand("production") and "poison-dcs" in expand("production", dcs="etcd3")
    assert "disk-full-raft" in expand("disk-full") and "disk-full-raft" not in expand("disk-full", dcs="etcd3")
    assert needs(expand("clock,disk-full-pg,poison-dcs", dcs="etcd3")) == {"faketime", "smallfs", "etcd"}


def test_loss_cuts_become_numgen_rules_and_layers_compose() -> None:
    topo = Topology(["n1", "n2", "n3"], k=7)
    installed: dict[str, str] = {}
    topo._nft = lambda name, script: installed.__setitem__(name, script)  # type: ignore[method-assign]
    topo.apply([Cut("n1", "n2", loss_pct=30)], "loss")
    assert "ip saddr 10.213.7.1 numgen random mod 100 < 30 drop" in installed["n2"]
    topo.apply([Cut("n3", "n2")], "partition")
    assert "ip saddr 10.213.7.3 drop" in installed["n2"] and "numgen" in installed["n2"]
    assert topo.full_cuts() == {("n3", "n2")} and topo.touched() == {("n3", "n2"), ("n1", "n2")}
    topo.heal("loss")
    assert "numgen" not in installed["n2"] and "10.213.7.3 drop" in installed["n2"]
    topo.heal()
    assert "drop" not in installed["n2"] and topo.cuts == frozenset()
    with pytest.raises(ValueError):
        topo.apply([Cut("n1", "n2", loss_pct=100)])


def test_identity_reads_the_lease_epoch_when_published() -> None:
    row = ("10.213.7.2", "000000030000000000000004", 7300000000000000001, None)
    names = {"10.213.7.2": "n2"}.get
    assert identity(row, names) == {"primary": "n2", "timeline": 3, "sysid": "7300000000000000001"}
    assert identity(row)["primary"] == "10.213.7.2", "an unknown address is kept as it is"
    assert identity((*row[:3], ""), names) == identity(row, names)
    assert identity((*row[:3], "42"), names)["lease_epoch"] == 42
    assert "current_setting('raftpg.leader_epoch', true)" in INSERT_SQL


def test_poison_catalogue_holds_overflow_nan_nesting_and_invalid_utf8() -> None:
    rng = random.Random(3)
    drawn = [draw_poison(rng) for _ in range(400)]
    keys = {k for k, _ in drawn}
    assert {"leader", "initialize", "config", "members/{replica}", "history"} <= keys
    raws = [raw for _, raw in drawn]
    assert any(b"1e999" in r for r in raws) and any(b"NaN" in r for r in raws)
    assert any(r.count(b"[") >= 100_000 for r in raws)
    undecodable = 0
    for raw in raws:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable > 0


@pytest.mark.parametrize(("members", "expected"), [
    ([{"name": "n2", "role": "sync_standby", "state": "streaming"},
      {"name": "n3", "role": "replica", "state": "streaming"}], ["n2"]),
    ([{"name": "n2", "role": "replica", "state": "stopped"},
      {"name": "n3", "role": "replica", "state": "streaming"}], ["n3"]),
    ([{"name": "n2", "role": "replica", "state": "starting"}], ["n2", "n3"]),
    ("garbage", ["n2", "n3"]),
])
def test_switchover_candidates_are_the_ones_the_agents_accept(members: Any, expected: list[str]) -> None:
    # In synchronous mode only a sync standby may take over: drawing among all replicas made most
    # switchovers of a synchronous campaign run a 412 that changed nothing.
    assert eligible_candidates({"members": members}, ["n2", "n3"]) == expected
    assert eligible_candidates(None, ["n2", "n3"]) == ["n2", "n3"]


def test_a_fault_window_opens_before_start_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A switchover does its harm inside start(): the writes acknowledged meanwhile are inside its window
    (admin cells were UNKNOWN on '1 acknowledged op during faults' when the window opened after start()).
    A fault that could not be started leaves a closed window and a 'not started' verdict."""
    import io
    import time as _time

    from jepsen_lite import runner as runner_mod
    from jepsen_lite.history import History, HistoryWriter
    from jepsen_lite.nemesis_base import FaultError, Step

    stream = io.StringIO()
    t0 = _time.monotonic()
    writer = HistoryWriter(stream, lambda: _time.monotonic() - t0)

    class Slow:
        def __init__(self, refuse: bool) -> None:
            self.refuse = refuse

        def start(self) -> dict[str, Any]:
            writer.append(1, "invoke", "add", 7, node="n1")  # a client write during the switchover
            writer.append(1, "ok", "add", 7, node="n1")
            if self.refuse:
                raise FaultError("refused with 412")
            return {"from": "n1", "candidate": "n2"}

        def verify(self) -> tuple[bool, dict[str, Any]]:
            return True, {}

    r = runner_mod.Runner(runner_mod.RunOptions(out=tmp_path / "run"))
    r.history = writer
    r.say = lambda *a, **k: None  # type: ignore[method-assign]
    faults = iter([Slow(False), Slow(True)])
    monkeypatch.setattr(runner_mod, "fault_for", lambda step, env: next(faults))
    monkeypatch.setattr(runner_mod.Runner, "_env", lambda self, step: None)
    step = Step(0, "switchover", 0.0, 0.0, {})
    fault = r._start_fault(step)
    assert fault is not None
    r._stop_fault(step, fault)
    assert r._start_fault(Step(1, "switchover", 0.0, 0.0, {})) is None
    history = History.loads(stream.getvalue())
    writes = [p for p in history.pairs if p.f == "add"]
    windows = history.fault_windows
    assert len(windows) == 2 and all(w.stop is not None for w in windows)
    assert all(w.overlaps(p.start, p.end) for w, p in zip(windows, writes, strict=True))
    assert r.fault_verdicts[-1][1] is None and "412" in r.fault_verdicts[-1][2]


def test_an_administrative_fault_keeps_its_window_open_after_the_change() -> None:
    """A raftpg switchover takes ~0.2 s: with no hold its window held 66 acknowledged writes in a whole
    admin cell (seed 8), too few to judge; the window now covers the seconds after the new primary answers."""
    rng = random.Random(3)
    for name in ("switchover", "failover"):
        holds = [FAULTS[name].plan(rng, 10.0)[0] for _ in range(50)]
        assert min(holds) >= 3.0 and max(holds) <= 8.0


def test_a_switchover_refused_for_want_of_an_eligible_candidate_is_asked_again() -> None:
    """Campaign cell kill-s8 (synchronous): right after a kill the primary refused every candidate for a
    moment ("n1 is not a synchronous standby") and the switchover changed nothing. It is asked again, with
    a fresh draw, while that is the reason; any other refusal ends it at once."""
    answers = [(412, {"error": "candidate n2 is not eligible: n2 is not a synchronous standby"}),
               (412, {"error": "candidate n3 is not eligible: n3 is not a synchronous standby"}), (200, "ok")]
    asked: list[str] = []
    fault = Switchover.__new__(Switchover)
    fault.pick = lambda: ("n1", ["n2", "n3", "n2"][len(asked)])  # type: ignore[method-assign]

    def request(primary: str, candidate: str) -> tuple[int, Any]:
        asked.append(candidate)
        return answers[len(asked) - 1]

    fault.request = request  # type: ignore[method-assign]
    from jepsen_lite.nemesis_base import FaultError

    assert fault.start()["candidate"] == "n2" and asked == ["n2", "n3", "n2"]
    assert not_eligible_yet(412, {"error": "candidate n2 is not eligible: lagging"})
    assert not not_eligible_yet(412, {"error": "switchover: leader n9 is not the primary"})
    assert not not_eligible_yet(503, "candidate n2 is not eligible")
    asked.clear()
    answers[0] = (412, {"error": "switchover: leader n9 is not the primary"})
    with pytest.raises(FaultError, match="refused with 412"):
        fault.start()
    assert asked == ["n2"]
