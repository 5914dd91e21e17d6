"""Real runs against a three-node raftpg cluster in network namespaces (needs root and PostgreSQL).

- ``test_smoke_run_passes``: a few faults of every kind (partitions, kills, pause, clock, admin operations,
  whole-cluster crash) in about three minutes; every checker must say VALID.
- ``test_defeated_fencing_is_caught``: the canary (FAULTS.md §5.3). The primary's agent and its fencing
  supervisor are frozen together (``pause-unfenced``): nothing fences the still-running postmaster, as for a
  Patroni user without a watchdog, while the pinned clients keep writing to it and another node is
  promoted after the TTL. The who-is-primary checker must report it. raftpg's code is unchanged: the harness
  defeats the fencing from outside.

On a shared host run them under ``flock /tmp/raftpg-heavy.lock``. The run directory is kept when a test
fails (its path is printed); ``JL_SMOKE_TIME`` / ``JL_SMOKE_SEED`` override the fault time and the seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jepsen_lite.checkers import summary
from jepsen_lite.runner import Runner, RunOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# one round of these takes ~150 s: partitions, kills, pause, clock, an admin operation, a whole-cluster crash
SMOKE_NEMESES = "partition-primary,partition-halves,kill-agent,kill-postgres,pause,clock,switchover,restart-cluster"


def _need_everything() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    for tool in ("nft", "nsenter", "gcc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if not os.path.isdir("/usr/lib/postgresql"):
        pytest.skip("PostgreSQL server binaries are not installed")


@pytest.fixture
def run_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    _need_everything()
    path = Path(tempfile.mkdtemp(prefix=f"jl-{request.node.name[5:30]}-", dir="/tmp"))
    yield path
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed and os.environ.get("JL_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)
    else:
        print(f"run directory kept: {path}")


def test_smoke_run_passes(run_dir: Path) -> None:
    opts = RunOptions(nemesis=SMOKE_NEMESES, time_s=float(os.environ.get("JL_SMOKE_TIME", "170")),
                      seed=int(os.environ.get("JL_SMOKE_SEED", "11")), out=run_dir, quiet_s=(2.0, 4.0),
                      healthy_s=45.0, settle_s=90.0)
    result = Runner(opts).run()
    text = summary(result.results)
    print(text)
    assert result.verdict == "VALID", f"{run_dir}\n{text}"
    nemesis = result.result("nemesis")
    assert nemesis is not None and nemesis.counts["verified"] >= 7, text
    assert (run_dir / "report.html").exists() and (run_dir / "timeline.png").exists()
    assert not list(run_dir.glob("nodes/*/data")), "data directories are removed"


def test_defeated_fencing_is_caught(run_dir: Path) -> None:
    result = Runner(RunOptions(nemesis="pause-unfenced", time_s=40, seed=1, out=run_dir)).run()
    text = summary(result.results)
    print(text)
    primaries = result.result("no-concurrent-primaries")
    assert primaries is not None and primaries.valid is False, text
    assert any("VIOLATION stale epoch" in d for d in primaries.details), text
    assert result.verdict == "INVALID" and result.exit_code == 1
    nemesis = result.result("nemesis")
    assert nemesis is not None and nemesis.counts["verified"] == 1, "the postmaster really ran unfenced"
