"""The campaign's pure parts: the matrix covers every setup a class allows, cells are stable and unique,
state resumes, rows render, durations parse."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jepsen_lite.campaign import (
    CLASSES,
    Cell,
    append_row,
    load_state,
    matrix,
    parse_duration,
    row_for,
    save_state,
)
from jepsen_lite.nemesis import expand


def test_sixteen_or_more_classes_each_with_every_setup_it_allows_over_eight_seeds() -> None:
    assert len(CLASSES) >= 16
    cells = [cell for _, cell in matrix(range(1, 9))]
    assert len({c.id for c in cells}) == len(cells) == 8 * len(CLASSES)
    for fc in CLASSES:
        mine = [c for c in cells if c.fault_class == fc.name]
        assert {c.synchronous for c in mine} == set(fc.modes), fc.name
        assert {c.dcs for c in mine} == set(fc.dcs), fc.name
        if fc.witness and "raft" in fc.dcs:
            assert any(c.witness for c in mine) and any(not c.witness for c in mine), fc.name
        assert not any(c.witness and c.dcs != "raft" for c in mine)
        if fc.workload == "set":
            assert {c.workload for c in mine} == {"set", "bank"}, fc.name


def test_every_class_names_known_faults_that_its_backends_can_take() -> None:
    for fc in CLASSES:
        if fc.workload in ("bootstrap",):
            continue
        kind = "kv" if fc.workload == "register" else "raftpg"
        for dcs in fc.dcs:
            assert expand(fc.nemesis, kind, dcs), (fc.name, dcs)


def test_the_matrix_is_stable_and_state_resumes(tmp_path: Path) -> None:
    first = [cell.id for _, cell in matrix(range(1, 3))]
    assert first == [cell.id for _, cell in matrix(range(1, 3))]
    state_path = tmp_path / "state.json"
    state = load_state(state_path)
    state["runs"][first[0]] = {"verdict": "VALID"}
    save_state(state_path, state)
    done = load_state(state_path)["runs"]
    assert [c for c in first if c not in done] == first[1:]


def test_rows_are_appended_under_the_header(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    cell = Cell("kill", 3, True, "etcd3", False, "bank")
    summary = {"faults": "7 (7)", "acked": 1234, "lost": 0, "double_primary": 0, "linearizable": "n/a",
               "failover": "4.1 / 9.8 s", "verdict": "VALID", "commit": "abc123", "history": "runs/x/history.jsonl"}
    append_row(results, row_for(cell, summary))
    append_row(results, row_for(cell, summary))
    text = results.read_text()
    assert text.count("| kill | 3 | etcd3, 3, sync, bank | 7 (7) | 1234 | 0 | 0 | n/a | 4.1 / 9.8 s | VALID |") == 2
    assert text.startswith("# jepsen-lite release campaign")


def test_durations() -> None:
    assert parse_duration("2h") == 7200 and parse_duration("45m") == 2700 and parse_duration("90") == 90
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")


def test_a_cell_run_again_starts_from_an_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A superseded cell run again reused the old run's node directories: its etcd data named members of
    another subnet and the new etcd cluster never became healthy (campaign row of 2026-12-03)."""
    from jepsen_lite import campaign

    first = next(cell for _, cell in matrix(range(1, 2)))
    stale = tmp_path / "runs" / first.id / "nodes" / "n1" / "etcd"
    stale.mkdir(parents=True)
    (tmp_path / "runs" / first.id / "history.jsonl").write_text('{"old": true}\n')
    seen: list[bool] = []

    class Stop(Exception):
        pass

    def fake_run_cell(fc, cell, time_s, out):  # noqa: ANN001, ANN202
        seen.append(out.exists())
        raise Stop

    monkeypatch.setattr(campaign, "run_cell", fake_run_cell)
    with pytest.raises(Stop):
        campaign.campaign_main(["--max-runs", "1", "--lock", "", "--state", str(tmp_path / "state.json"),
                                "--results", str(tmp_path / "RESULTS.md"), "--runs-dir", str(tmp_path / "runs")])
    assert seen == [False] and not stale.exists()
    # the superseded run's history is kept (stop 27: an INVALID row's history was lost to its re-run)
    (kept,) = (tmp_path / "runs" / "superseded").glob(f"{first.id}-*/history.jsonl")
    assert kept.read_text() == '{"old": true}\n'
    assert not list((tmp_path / "runs" / "superseded").glob("*/nodes"))


def test_quorum_commit_classes_run_every_seed_in_quorum_mode() -> None:
    """Issue 17: the campaign runs with quorum commit (``--quorum``): its classes' cells say so in their
    id and setup, and lost acknowledged writes count as violations there (synchronous)."""
    cells = [cell for fc, cell in matrix(range(1, 9)) if fc.quorum]
    assert {c.fault_class for c in cells} == {"quorum-kill", "quorum-partition"}
    assert all(c.quorum and c.synchronous and c.mode == "quorum" and "-quorum-" in c.id for c in cells)
    assert {c.dcs for c in cells} == {"raft", "etcd3"}
    assert not any(c.quorum for fc, c in matrix(range(1, 9)) if not fc.quorum)
    assert "quorum" in row_for(cells[0], {"verdict": "VALID"})


def test_slow_classes_run_longer_and_the_estimate_counts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """double-failover cells had 640-836 acknowledged writes in 90 s of faults (seeds 1-6): it runs longer."""
    from jepsen_lite import campaign

    factors = {fc.name: fc.time_factor for fc in campaign.CLASSES}
    assert factors["double-failover"] > 1.5 and factors["disk-full-pg"] > 1.5 and factors["pause"] == 1.0
    asked: list[float] = []

    class Stop(Exception):
        pass

    def fake_run_cell(fc, cell, time_s, out):  # noqa: ANN001, ANN202
        asked.append(time_s)
        raise Stop

    monkeypatch.setattr(campaign, "run_cell", fake_run_cell)
    common = ["--max-runs", "1", "--lock", "", "--state", str(tmp_path / "state.json"), "--results",
              str(tmp_path / "RESULTS.md"), "--runs-dir", str(tmp_path / "runs"), "--classes", "double-failover"]
    with pytest.raises(Stop):
        campaign.campaign_main(common)
    assert asked == [90.0 * factors["double-failover"]]
    # a budget that fits 90 s of faults but not the longer run starts nothing
    assert campaign.campaign_main([*common, "--budget", f"{90 + campaign.RUN_OVERHEAD_S + 10:.0f}s"]) == 0
    assert asked == [90.0 * factors["double-failover"]]
