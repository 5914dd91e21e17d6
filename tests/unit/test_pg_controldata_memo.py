"""pg_controldata runs only when pg_control's bytes changed (raftpg.pg.controldata.ControlFileMemo).

The program is replaced by a counting stand-in (unit tests start no processes); what is under test is when
it is asked, and that an answer is never reused for different bytes or for a file that cannot be read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftpg.model import DataDir
from raftpg.pg import controldata
from raftpg.pg.controldata import ControlFileMemo, data_dir_state, read_controldata
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError

OUTPUT = """\
Database system identifier:           7304563462426726143
Database cluster state:               {state}
Latest checkpoint location:           0/3000060
Latest checkpoint's TimeLineID:       1
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "global").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "global" / "pg_control").write_bytes(b"in production".ljust(8192, b"\0"))
    data.chmod(0o700)
    return data


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each pg_controldata run, as the state it printed: the first bytes of pg_control."""
    seen: list[str] = []

    def fake_run_tool(settings: PgSettings, program: str, args: list[str], timeout_s: float) -> str:
        assert program == "pg_controldata" and args == ["-D", settings.data_dir]
        try:
            state = (Path(settings.data_dir) / "global" / "pg_control").read_bytes().rstrip(b"\0").decode()
        except OSError as exc:
            raise PgError(f"pg_controldata failed: {exc}") from None
        seen.append(state)
        return OUTPUT.format(state=state)

    monkeypatch.setattr(controldata, "run_tool", fake_run_tool)
    return seen


def settings(data: Path, bin_dir: str = "/usr/lib/postgresql/15/bin") -> PgSettings:
    return PgSettings(name="n1", scope="demo", data_dir=str(data), bin_dir=bin_dir)


def test_unchanged_pg_control_is_not_read_again(data_dir: Path, runs: list[str]) -> None:
    memo = ControlFileMemo()
    for _ in range(5):
        assert read_controldata(settings(data_dir), memo=memo).cluster_state == "in production"
    assert runs == ["in production"] and memo.runs == 1


def test_changed_bytes_run_it_again(data_dir: Path, runs: list[str]) -> None:
    memo = ControlFileMemo()
    read_controldata(settings(data_dir), memo=memo)
    (data_dir / "global" / "pg_control").write_bytes(b"shut down".ljust(8192, b"\0"))
    assert read_controldata(settings(data_dir), memo=memo).cluster_state == "shut down"
    # a change past the first byte counts too: the whole 8 kB block is compared
    (data_dir / "global" / "pg_control").write_bytes(b"shut down".ljust(8191, b"\0") + b"\1")
    read_controldata(settings(data_dir), memo=memo)
    assert len(runs) == 3


def test_another_program_or_data_dir_is_asked_afresh(data_dir: Path, tmp_path: Path, runs: list[str]) -> None:
    memo = ControlFileMemo()
    read_controldata(settings(data_dir), memo=memo)
    read_controldata(settings(data_dir, bin_dir="/usr/lib/postgresql/16/bin"), memo=memo)
    other = tmp_path / "other"
    (other / "global").mkdir(parents=True)
    (other / "global" / "pg_control").write_bytes(b"in production".ljust(8192, b"\0"))
    read_controldata(settings(other), memo=memo)
    assert len(runs) == 3


def test_unreadable_pg_control_is_never_answered_from_memory(data_dir: Path, runs: list[str]) -> None:
    memo = ControlFileMemo()
    assert data_dir_state(settings(data_dir))[0] is DataDir.INITIALIZED
    read_controldata(settings(data_dir), memo=memo)
    (data_dir / "global" / "pg_control").unlink()
    with pytest.raises(PgError):
        read_controldata(settings(data_dir), memo=memo)


def test_data_dir_state_uses_the_process_memo(data_dir: Path, runs: list[str], monkeypatch) -> None:
    monkeypatch.setattr(controldata, "MEMO", ControlFileMemo())
    for _ in range(3):
        state, control = data_dir_state(settings(data_dir))
        assert state is DataDir.INITIALIZED and control is not None and control.sysid == "7304563462426726143"
    assert len(runs) == 1
