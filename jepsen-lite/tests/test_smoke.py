"""Real runs against a raftpg cluster in network namespaces (needs root and PostgreSQL). In CI (about 9
minutes together):

- ``test_smoke_run_passes``: about three minutes of faults, old and new kinds (partitions, kills, pause,
  clock, a switchover, a whole-cluster crash, a clean group stop, every connection slot taken, a frozen
  postmaster, packet loss); every checker must say VALID and every injected fault must be verified.
- ``test_defeated_fencing_is_caught``: the canary of no-concurrent-primaries (FAULTS.md §5.3). The primary's
  agent and its fencing supervisor are frozen together (``pause-unfenced``): nothing fences the
  still-running postmaster, as for a Patroni user without a watchdog, while the pinned clients keep writing
  to it and another node is promoted after the TTL. raftpg's code is unchanged: the harness defeats the
  fencing from outside.
- ``test_split_transfers_are_caught``: the canary of the bank checker: transfers that are not atomic
  (``--bank-split``) must be reported, without any fault.

Opt-in (``JL_FULL=1``, a few minutes each): the etcd backend under poisoned documents, partitions and kills;
the bootstrap workload; its canary (a node configured into another cluster).

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
from jepsen_lite.workloads import WorkloadOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMOKE_NEMESES = ("partition-primary,kill-agent,pause,clock,switchover,restart-cluster,stop-group,"
                 "exhaust-connections,freeze-postgres,packet-loss")
full_only = pytest.mark.skipif(os.environ.get("JL_FULL") != "1", reason="opt-in: JL_FULL=1")


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
    opts = RunOptions(nemesis=SMOKE_NEMESES, time_s=float(os.environ.get("JL_SMOKE_TIME", "180")),
                      seed=int(os.environ.get("JL_SMOKE_SEED", "11")), out=run_dir, quiet_s=(2.0, 4.0),
                      healthy_s=45.0, settle_s=90.0)
    result = Runner(opts).run()
    text = summary(result.results)
    print(text)
    assert result.verdict == "VALID", f"{run_dir}\n{text}"
    nemesis = result.result("nemesis")
    assert nemesis is not None and nemesis.counts["verified"] >= 8, text
    assert nemesis.counts["verified"] == nemesis.counts["injected"], text
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


def test_split_transfers_are_caught(run_dir: Path) -> None:
    result = Runner(RunOptions(nemesis="", workload="bank", time_s=20, seed=2, out=run_dir,
                               workload_opts=WorkloadOptions(split_transfers=True))).run()
    text = summary(result.results)
    print(text)
    bank = result.result("bank")
    assert bank is not None and bank.valid is False, text
    assert any("VIOLATION wrong total" in d for d in bank.details), text


@full_only
def test_etcd_backend_under_poison_partitions_and_kills(run_dir: Path) -> None:
    result = Runner(RunOptions(dcs="etcd3", nemesis="poison-dcs,partition-leader,kill-agent,partition-primary",
                               time_s=90, seed=3, out=run_dir, workload="bank", quiet_s=(2.0, 4.0))).run()
    text = summary(result.results)
    print(text)
    assert result.verdict == "VALID", text
    assert result.result("bank") is not None


@full_only
def test_bootstrap_rounds_converge(run_dir: Path) -> None:
    result = Runner(RunOptions(workload="bootstrap", time_s=90, seed=4, out=run_dir)).run()
    text = summary(result.results)
    print(text)
    assert result.verdict == "VALID", text


@full_only
def test_foreign_cluster_in_a_bootstrap_is_caught(run_dir: Path) -> None:
    result = Runner(RunOptions(workload="bootstrap", time_s=30, seed=5, out=run_dir, foreign_scope=True,
                               settle_s=30.0)).run()
    text = summary(result.results)
    print(text)
    bootstrap = result.result("bootstrap")
    assert bootstrap is not None and bootstrap.valid is False, text
