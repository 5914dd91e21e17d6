"""Canaries for C1 (set) and C2 (no-concurrent-primaries): bad histories MUST be flagged, good ones pass.

A checker that never fails is not trusted (FAULTS.md §5.3), so every rule has a history that breaks it.
"""

import pytest

from jepsen_lite import cli
from jepsen_lite.checkers import (
    UNKNOWN,
    CheckOptions,
    availability,
    check_all,
    overall,
    primaries,
    sets,
    summary,
)
from jl_builders import Builder


def _set_history(acked=(1, 2, 3), failed=(), info=(), reads=None, primary="n1"):
    """Sequential inserts on n1 (timeline 1), then a final read-all per node in ``reads``."""
    b, t = Builder(), 0.0
    for outcome, values in (("ok", acked), ("fail", failed), ("info", info)):
        for v in values:
            b.op(1, "insert", v, t, t + 0.1, type=outcome, primary=primary, timeline=1)
            t += 0.2
    everything = sorted(acked)
    for node, values in (reads or {"n1": everything, "n2": everything}).items():
        b.op(9, "read-all", None, t, t + 0.1, node=node, result=list(values))
        t += 0.2
    return b.build()


def _set(h, **kw):
    return sets.check(h, min_acked=kw.pop("min_acked", 1), **kw)


# ---- C1 set: must fail -------------------------------------------------------------------------------

def test_lost_write_is_invalid_in_sync_mode():
    r = _set(_set_history(reads={"n1": [1, 3], "n2": [1, 3]}))
    assert r.valid is False and r.counts["lost"] == 1 and r.counts["ok"] == 2
    assert any("lost" in d and "2" in d for d in r.details)


def test_lost_write_is_a_warning_in_async_mode():
    r = _set(_set_history(reads={"n1": [1, 3], "n2": [1, 3]}), lost_allowed=True)
    assert r.valid is True and r.counts["lost"] == 1
    assert any(d.startswith("WARNING") for d in r.details)


def test_phantom_value_is_invalid_even_in_async_mode():
    r = _set(_set_history(reads={"n1": [1, 2, 3, 99], "n2": [1, 2, 3, 99]}), lost_allowed=True)
    assert r.valid is False and r.counts["unexpected"] == 1


def test_failed_but_present_is_invalid():
    r = _set(_set_history(failed=(4,), reads={"n1": [1, 2, 3, 4]}))
    assert r.valid is False and r.counts["failed_but_present"] == 1


def test_final_reads_that_disagree_are_invalid_even_in_async_mode():
    # Old primary n1 kept an acked write the new primary n2 lost: lost (allowed) but divergent (never).
    r = _set(_set_history(reads={"n1": [1, 2, 3], "n2": [1, 3]}), lost_allowed=True)
    assert r.valid is False and r.counts["divergent"] == 1 and r.counts["lost"] == 1
    assert any("absent on n2" in d for d in r.details)


def test_value_listed_twice_is_invalid():
    r = _set(_set_history(reads={"n1": [1, 2, 2, 3]}))
    assert r.valid is False and r.counts["duplicated"] == 1


def test_violation_is_invalid_even_with_too_little_evidence():
    r = _set(_set_history(reads={"n1": [1, 3]}), min_acked=1000)
    assert r.valid is False


# ---- C1 set: must pass / be inconclusive -------------------------------------------------------------

def test_info_inserts_are_maybe_present_or_absent():
    r = _set(_set_history(info=(4, 5), failed=(6,), reads={"n1": [1, 2, 3, 4], "n2": [1, 2, 3, 4]}))
    assert r.valid is True
    assert (r.counts["recovered"], r.counts["maybe"], r.counts["failed"], r.counts["ok"]) == (1, 1, 1, 3)


def test_unfinished_insert_is_info_not_fail():
    h = Builder().op(1, "insert", 1, 0.0, 0.1).op(2, "insert", 2, 0.0, type=None) \
        .op(9, "read-all", None, 1.0, 1.1, result=[1, 2]).build()
    r = _set(h)
    assert r.valid is True and r.counts["recovered"] == 1


def test_too_few_acked_inserts_is_unknown_not_pass():
    r = _set(_set_history(), min_acked=4)
    assert r.valid == UNKNOWN and any("inconclusive" in d for d in r.details)


def test_evidence_counts_only_acked_inserts_during_faults_when_there_are_faults():
    b = Builder()
    for v in range(5):
        b.op(1, "insert", v, v, v + 0.1)
    b.nemesis("isolate", "start", 10.0).op(1, "insert", 5, 10.5, 10.6).nemesis("isolate", "stop", 11.0)
    b.op(9, "read-all", None, 20.0, 20.1, result=list(range(6)))
    r = _set(b.build(), min_acked=2)
    assert r.valid == UNKNOWN and r.counts["evidence"] == 1 and r.counts["acknowledged"] == 6


def test_no_final_read_is_unknown():
    h = Builder().op(1, "insert", 1, 0.0, 0.1).build()
    assert _set(h).valid == UNKNOWN


def test_repeated_insert_value_is_unknown():
    h = Builder().op(1, "insert", 1, 0.0, 0.1).op(1, "insert", 1, 0.2, 0.3) \
        .op(9, "read-all", None, 1.0, 1.1, result=[1]).build()
    r = _set(h)
    assert r.valid == UNKNOWN and "more than once" in r.details[0]


# ---- C2 no-concurrent-primaries ----------------------------------------------------------------------

def _w(b, process, value, start, end, primary, timeline=None, **kw):
    return b.op(process, "insert", value, start, end, node=primary, primary=primary, timeline=timeline, **kw)


def _prim(h, **kw):
    return primaries.check(h, min_acked=kw.pop("min_acked", 1), **kw)


def _clean_failover():
    b = Builder()
    _w(b, 1, 1, 0.0, 0.1, "n1", 1)
    _w(b, 1, 2, 0.2, 0.3, "n1", 1)
    _w(b, 2, 3, 2.0, 2.1, "n2", 2)
    _w(b, 2, 4, 2.2, 2.3, "n2", 2)
    return b


def test_clean_failover_is_valid_with_figures():
    r = _prim(_clean_failover().build())
    assert r.valid is True and r.counts["epochs"] == 2
    assert r.counts["min_handover_gap_ms"] == pytest.approx(1800.0)
    assert r.counts["max_window_overlap_ms"] == 0.0


def test_alternation_a_b_a_without_timelines_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0.0, 0.1, "n1")
    _w(b, 2, 2, 0.2, 0.3, "n2")   # n2 acked after n1 acked...
    _w(b, 1, 3, 0.4, 0.5, "n1")   # ...and n1 acked again after that
    r = _prim(b.build())
    assert r.valid is False
    assert any("alternation n1->n2->n1" in d for d in r.details)


def test_old_epoch_acking_after_new_epoch_acked_is_invalid():
    b = _clean_failover()
    _w(b, 3, 5, 2.4, 2.5, "n1", 1)   # the old primary still writable after n2's acks
    r = _prim(b.build())
    assert r.valid is False and r.counts["violations"] == 1
    assert "stale epoch" in r.details[0] and "n1" in r.details[0]


def test_two_nodes_on_the_same_timeline_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0.0, 0.1, "n1", 2)
    _w(b, 2, 2, 5.0, 5.1, "n2", 2)
    r = _prim(b.build())
    assert r.valid is False and any("same epoch on two nodes" in d for d in r.details)


def test_two_system_identifiers_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0.0, 0.1, "n1", 1, sysid="111")
    _w(b, 2, 2, 5.0, 5.1, "n2", 1, sysid="222")
    r = _prim(b.build())
    assert r.valid is False and any("system identifiers" in d for d in r.details)


def test_slow_write_spanning_the_failover_is_not_a_violation():
    b = _clean_failover()
    _w(b, 3, 5, 0.5, 2.5, "n1", 1)   # invoked before n2's first ack completed, acked by n1 late
    r = _prim(b.build())
    assert r.valid is True and r.counts["max_window_overlap_ms"] == pytest.approx(300.0)
    assert r.counts["min_handover_gap_ms"] == pytest.approx(-400.0)


def test_failing_back_to_the_old_node_on_a_new_timeline_is_valid():
    b = _clean_failover()
    _w(b, 1, 5, 4.0, 4.1, "n1", 3)
    assert _prim(b.build()).valid is True


def test_lease_epoch_orders_two_promotions_to_the_same_timeline():
    b = Builder()
    _w(b, 1, 1, 0.0, 0.1, "n2", 2, lease_epoch=5)
    _w(b, 2, 2, 1.0, 1.1, "n3", 2, lease_epoch=7)
    assert _prim(b.build()).valid is True
    _w(b, 1, 3, 1.2, 1.3, "n2", 2, lease_epoch=5)   # n2 (older lease) acks after n3 acked
    r = _prim(b.build())
    assert r.valid is False and "stale epoch" in r.details[0]


def test_fail_and_info_writes_are_not_evidence_of_a_primary():
    b = _clean_failover()
    b.op(3, "insert", 5, 2.4, 2.5, node="n1", type="info", primary="n1", timeline=1)
    b.op(3, "insert", 6, 2.6, 2.7, node="n1", type="fail", primary="n1", timeline=1)
    assert _prim(b.build()).valid is True


def test_single_epoch_or_few_writes_is_unknown():
    b = Builder()
    _w(b, 1, 1, 0.0, 0.1, "n1", 1)
    r = _prim(b.build())
    assert r.valid == UNKNOWN and any("no primary change" in d for d in r.details)
    assert _prim(_clean_failover().build(), min_acked=10).valid == UNKNOWN


def test_writes_without_primary_field_are_reported():
    b = _clean_failover().op(5, "insert", 9, 3.0, 3.1)
    r = _prim(b.build())
    assert r.counts["attributed"] == 4 and any("no 'primary' field" in d for d in r.details)


# ---- C6 availability ---------------------------------------------------------------------------------

def _failover_run():
    b = Builder()
    for n in range(10):   # n1 acks every 0.5 s until t=5
        _w(b, 1, n, n * 0.5, n * 0.5 + 0.05, "n1", 1)
    b.nemesis("isolate", {"phase": "start", "victim": "n1"}, 5.0)
    b.op(1, "insert", 100, 5.0, 6.0, node="n1", type="info")
    b.op(2, "insert", 101, 5.5, 6.0, node="n2", type="fail")
    _w(b, 2, 102, 7.0, 7.5, "n2", 2)   # first ok write on the new primary: 2.5 s after the fault
    b.nemesis("isolate", {"phase": "stop"}, 8.0)
    _w(b, 2, 103, 8.0, 8.1, "n2", 2)
    b.nemesis("pause", "start", 9.0)   # a fault after which nothing is acked any more
    b.op(3, "insert", 104, 9.5, 10.0, node="n2", type="info")
    return b.build()


def test_availability_figures():
    r = availability.check(_failover_run(), gap_threshold_s=1.0)
    assert r.valid is True
    c = r.counts
    assert (c["faults"], c["failovers"], c["faults_without_recovery"]) == (2, 1, 1)
    assert c["median_failover_s"] == pytest.approx(2.5) and c["worst_recovery_s"] == pytest.approx(2.5)
    assert c["ok_writes"] == 12 and c["ok_fraction"] == pytest.approx(12 / 15, abs=1e-4)
    # gaps: 4.55 -> 7.5 (fault), 8.1 -> 9.5 (last invoke, nothing acked)
    assert c["unavailability_windows"] == 2
    assert c["worst_unavailable_s"] == pytest.approx(2.95)
    assert any("failover n1 -> n2" in d for d in r.details)
    assert any("no ok write invoked after it started" in d for d in r.details)


def test_availability_is_informational_even_without_writes():
    r = availability.check(Builder().nemesis("kill", "start", 1.0).build())
    assert r.valid is True and r.counts["faults_without_recovery"] == 1


# ---- check_all, summary, command line ---------------------------------------------------------------

def test_check_all_picks_checkers_by_workload_and_summary_ends_with_the_verdict():
    results = check_all(_set_history(reads={"n1": [1, 3]}), CheckOptions(min_acked=1, min_epochs=1))
    assert [r.name for r in results] == ["set", "no-concurrent-primaries", "availability"]
    text = summary(results)
    assert "set: INVALID" in text and "no-concurrent-primaries: VALID" in text
    assert text.splitlines()[-1] == "INVALID"


def test_default_minimums_make_a_tiny_run_inconclusive():
    results = check_all(_set_history())
    assert [r.valid for r in results] == [UNKNOWN, UNKNOWN, True]
    assert overall(results) == "UNKNOWN"


def test_malformed_history_gives_unknown_for_that_checker_only():
    h = Builder().op(1, "insert", 1, 0.0, 0.1).op(9, "read-all", None, 1.0, 1.1, result="oops").build()
    results = check_all(h, CheckOptions(checkers=("set", "availability")))
    assert results[0].valid == UNKNOWN and "read-all value must be a list" in results[0].details[0]
    assert results[1].valid is True


def test_unknown_checker_name_is_an_error():
    with pytest.raises(ValueError, match="unknown checkers"):
        check_all(_set_history(), CheckOptions(checkers=("no-such-checker",)))


def test_command_line_exit_status(tmp_path, capsys):
    path = tmp_path / "history.jsonl"
    _set_history(reads={"n1": [1, 3]}).write(path)
    assert cli.main([str(path), "--min-acked", "1"]) == 1
    assert cli.main([str(path), "--min-acked", "1", "--async-replication", "--checker", "set"]) == 0
    _set_history().write(path)
    assert cli.main([str(path), "--checker", "set"]) == 2   # no violation, but only 3 acked inserts
    assert capsys.readouterr().out.splitlines()[-1] == "UNKNOWN"
    path.write_text("{broken\n")
    assert cli.main([str(path)]) == 3


def test_failover_time_is_to_the_new_epoch_not_to_the_first_ok_write():
    b = Builder()
    for n in range(10):
        _w(b, 1, n, n * 0.5, n * 0.5 + 0.05, "n1", 1)
    b.nemesis("isolate", {"phase": "start", "victim": "n1"}, 5.0)
    _w(b, 1, 50, 5.1, 5.15, "n1", 1)   # the isolated primary still acks (asynchronous mode, lease not out)
    _w(b, 2, 51, 7.0, 7.5, "n2", 2)    # the new primary's first ack
    b.nemesis("isolate", {"phase": "stop", "victim": "n1"}, 8.0)
    r = availability.check(b.build(), gap_threshold_s=1.0)
    assert r.counts["worst_recovery_s"] == pytest.approx(0.15)
    assert r.counts["failovers"] == 1 and r.counts["median_failover_s"] == pytest.approx(2.5)
