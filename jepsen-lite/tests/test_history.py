"""History format: JSONL round trip, validation with line numbers, pairing, fault windows, the writer."""

import io
import json
import math

import pytest

from jepsen_lite.history import FaultWindow, History, HistoryError, HistoryWriter, Op
from jl_builders import Builder


def _line(**kw):
    row = {"index": 0, "process": 1, "type": "invoke", "f": "insert", "value": 1, "time": 0.5}
    row.update(kw)
    return json.dumps(row)


def test_round_trip_keeps_op_specific_fields(tmp_path):
    h = (Builder().op(1, "insert", 7, 0.0, 0.2, primary="n2", timeline=3, sysid="123")
         .nemesis("isolate", {"phase": "start", "victim": "n1"}, 0.1).build())
    path = tmp_path / "h.jsonl"
    h.write(path)
    again = History.read(path)
    assert again == h
    ok = again.pairs[0].completion
    assert (ok.get("primary"), ok.get("timeline"), ok.get("sysid")) == ("n2", 3, "123")
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 1: invalid JSON"),
    (_line(type="done"), "line 1: type must be one of"),
    (json.dumps({"index": 0, "process": 1, "type": "ok", "f": "x"}), "line 1: missing field 'time'"),
    (_line(time=True), "time must be a finite number"),
    (_line(index="3"), "index must be an integer"),
    (_line(process="nemesis", type="invoke"), "nemesis entries must have type 'info'"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_lines_are_rejected_with_their_line_number(line, message):
    with pytest.raises(HistoryError, match=message):
        History.loads(line)


def test_duplicate_index_is_rejected():
    with pytest.raises(HistoryError, match="duplicate index 0"):
        History.loads(_line() + "\n" + _line(type="ok"))


def test_missing_completion_at_the_end_counts_as_info():
    h = Builder().op(1, "insert", 1, 0.0, type=None).op(2, "insert", 2, 0.0, 1.0).build()
    open_pair, done = h.pairs
    assert open_pair.type == "info" and open_pair.completion is None and open_pair.end is None
    assert done.type == "ok" and done.end == 1.0


def test_read_value_comes_from_the_completion_write_value_from_the_invoke():
    h = Builder().op(1, "read", None, 0.0, 1.0, result=5).op(2, "write", 3, 0.0, 1.0, result=None).build()
    assert [p.value for p in h.pairs] == [5, 3]


@pytest.mark.parametrize("rows, message", [
    ([("invoke", "insert", 0.0), ("invoke", "insert", 0.1)], "still outstanding"),
    ([("ok", "insert", 0.0)], "completion without an invoke"),
    ([("invoke", "insert", 0.0), ("ok", "read", 0.1)], "does not match invoke"),
    ([("invoke", "insert", 1.0), ("ok", "insert", 0.5)], "before its invoke"),
])
def test_pairing_rules(rows, message):
    h = History.from_dicts({"index": i, "process": 1, "type": t, "f": f, "value": 1, "time": tm}
                           for i, (t, f, tm) in enumerate(rows))
    with pytest.raises(HistoryError, match=message):
        _ = h.pairs


def test_fault_windows_pair_start_and_stop_per_name_and_id():
    h = (Builder()
         .nemesis("kill", {"phase": "start", "id": "a"}, 1.0)
         .nemesis("kill", {"phase": "start", "id": "b"}, 2.0)
         .nemesis("kill", {"phase": "stop", "id": "a"}, 3.0)
         .nemesis("isolate", "start", 4.0)
         .nemesis("clock", "note: offset verified", 4.5)
         .build())
    windows = h.fault_windows
    assert [(w.f, w.start, w.stop) for w in windows] == [("kill", 1.0, 3.0), ("kill", 2.0, None),
                                                          ("isolate", 4.0, None)]
    assert FaultWindow("x", 1.0, None).overlaps(100.0, 101.0)
    assert not FaultWindow("x", 1.0, 2.0).overlaps(2.5, 3.0)


def test_writer_assigns_indexes_stamps_time_and_enforces_pairing():
    stream = io.StringIO()
    ticks = iter([0.0, 0.25, 0.5, 0.75])
    w = HistoryWriter(stream, now=lambda: next(ticks))
    w.append(1, "invoke", "insert", 10, node="n1")
    w.append("nemesis", "info", "pause", "start")
    op = w.append(1, "ok", "insert", 10, node="n1", primary="n1", timeline=1)
    assert op == Op(2, 1, "ok", "insert", 10, 0.5, "n1", {"primary": "n1", "timeline": 1})
    with pytest.raises(HistoryError, match="does not complete"):
        w.append(1, "ok", "insert", 10)
    w.append(1, "invoke", "insert", 11)
    with pytest.raises(HistoryError, match="outstanding"):
        w.append(1, "invoke", "insert", 12)
    h = History.loads(stream.getvalue())
    assert [o.index for o in h] == [0, 1, 2, 3]
    assert h.pairs[-1].type == "info" and math.isclose(h.pairs[-1].start, 0.75)
