"""``python -m jepsen_lite campaign --budget 2h``: the release campaign. A matrix of runs (fault class x seed,
each seed choosing synchronous or asynchronous replication, the embedded Raft or etcd, three data nodes or
two plus a witness, the set or the bank workload), run one at a time, each taking the shared heavy lock
(``--lock``, default /tmp/raftpg-heavy.lock) only for its own duration so other work can run in between.

Resumable: ``jepsen-lite/campaign-state.json`` (``--state``) records every finished cell; a new invocation
skips them and goes on in matrix order (breadth first: every class with seed 1, then seed 2, ...) until the
budget or ``--max-runs`` is spent (a run is not started when its estimate would exceed the budget). Each run
is appended as one row to the table at the end of ``jepsen-lite/RESULTS.md`` (``--results``); its run
directory (history, logs, report) is ``jepsen-lite/runs/campaign/<cell>`` (gitignored).

A run needs at least ``--time`` (90) seconds of faults and ``MIN_ACKED`` (1,000) acknowledged writes: with
fewer, its verdict is recorded as UNKNOWN (too little evidence), never VALID. Classes whose faults keep
writes away for much of a run get ``time_factor`` x ``--time`` seconds of faults.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
MIN_ACKED = 1000
RUN_OVERHEAD_S = 150.0  # start, settle, final reads, teardown, checkers: added to --time for the estimate


# Classes whose faults may leave the primary in place also get a switchover: without a primary change the
# no-concurrent-primaries checker has no evidence and the run is UNKNOWN.
@dataclass(frozen=True)
class FaultClass:
    name: str
    nemesis: str
    dcs: tuple[str, ...] = ("raft", "etcd3")
    modes: tuple[bool, ...] = (True, False)  # synchronous?
    witness: bool = True  # may run on two data nodes + a witness (Raft only)
    workload: str = "set"  # "set" (or bank on some seeds), "register", "bootstrap"
    overlap: int = 1
    quorum: bool = False  # synchronous_mode: quorum (every seed)
    # runs longer than --time: classes whose faults keep writes away for much of a run (a full data disk,
    # two failovers in a row) came out of seeds 1-6 with 640-916 acknowledged writes, under MIN_ACKED
    time_factor: float = 1.0


CLASSES: tuple[FaultClass, ...] = (
    FaultClass("partition-primary", "partition-primary,partition-leader"),
    FaultClass("partition-shapes", "partition-halves,partition-ring,partition-bridge,partition-random,switchover"),
    FaultClass("partition-oneway", "partition-oneway,partition-oneway-new,partition-replica,switchover"),
    FaultClass("packet-loss", "packet-loss,switchover"),
    FaultClass("kill", "kill-agent,kill-postgres,kill-node,switchover", time_factor=1.3),
    FaultClass("pause", "pause"),
    FaultClass("clock", "clock,switchover"),
    FaultClass("freeze-postgres", "freeze-postgres,switchover"),
    FaultClass("stop-group", "stop-group"),
    FaultClass("exhaust-connections", "exhaust-connections"),
    FaultClass("disk-full-pg", "disk-full-pg,switchover", time_factor=1.6),
    # with a switchover since stop 27: seeds 6 and 7 filled only replicas' Raft disks, one primary epoch
    FaultClass("disk-full-raft", "disk-full-raft,switchover", dcs=("raft",)),
    FaultClass("poison-dcs", "poison-dcs,switchover", dcs=("etcd3",), witness=False),
    FaultClass("admin", "switchover,failover"),
    FaultClass("kill-during-switchover", "kill-during-switchover", time_factor=1.5),
    FaultClass("restart-loop", "restart-loop,restart-cluster,stop-cluster,switchover"),
    FaultClass("double-failover", "double-failover", modes=(False,), time_factor=1.8),
    FaultClass("overlap", "partition-random,pause,clock,kill-agent,packet-loss,freeze-postgres", overlap=3),
    FaultClass("bootstrap", "", workload="bootstrap"),
    FaultClass("quorum-kill", "kill-agent,kill-postgres,kill-node,kill-during-switchover,switchover", modes=(True,),
               quorum=True),
    FaultClass("quorum-partition", "partition-primary,partition-leader,partition-random,pause,switchover",
               modes=(True,), quorum=True),
    FaultClass("register", "partition,kill-agent,pause,clock", dcs=("raft",), modes=(True,), witness=False,
               workload="register"),
)


@dataclass(frozen=True)
class Cell:
    fault_class: str
    seed: int
    synchronous: bool
    dcs: str
    witness: bool
    workload: str
    quorum: bool = False

    @property
    def mode(self) -> str:
        return "quorum" if self.quorum else "sync" if self.synchronous else "async"

    @property
    def id(self) -> str:
        mode = self.mode
        nodes = "2w" if self.witness else "3n"
        return f"{self.fault_class}-s{self.seed}-{mode}-{self.dcs}-{nodes}-{self.workload}"


def cell_for(fc: FaultClass, seed: int, position: int = 0) -> Cell:
    """The seed (shifted by the class's position, so that one pass over the classes mixes setups) picks the
    setup; across eight seeds every class meets every setup it allows."""
    k = seed + position
    synchronous = fc.modes[k % len(fc.modes)]
    dcs = fc.dcs[(k // 2) % len(fc.dcs)]
    witness = fc.witness and dcs == "raft" and k % 4 == 1
    workload = fc.workload
    if workload == "set" and k % 3 == 0:
        workload = "bank"
    return Cell(fc.name, seed, synchronous, dcs, witness, workload, fc.quorum)


def matrix(seeds: Sequence[int], classes: Sequence[FaultClass] = CLASSES) -> Iterator[tuple[FaultClass, Cell]]:
    positions = {fc.name: i for i, fc in enumerate(CLASSES)}
    for seed in seeds:
        for fc in classes:
            yield fc, cell_for(fc, seed, positions.get(fc.name, 0))


# ------------------------------------------------------------------ state and results


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"runs": {}}
    return json.loads(path.read_text())


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)


RESULTS_HEADER = """# jepsen-lite release campaign: results

Written by `python -m jepsen_lite campaign` (see `jepsen-lite/README.md`, *Campaign*): one row per run,
appended. A run is a fault class x a seed; the seed chooses the setup (synchronous or asynchronous
replication, the embedded Raft or etcd, three data nodes or two plus a witness, the set or the bank
workload). Each run has at least 90 s of faults; fewer than 1,000 acknowledged writes makes it UNKNOWN.

Columns: *faults* = injected (verified); *acked* = acknowledged writes (inserts or transfers); *lost* =
acknowledged writes absent after the run (a violation in synchronous mode, a warning in asynchronous
mode); *double primary* = proven violations of the no-concurrent-primaries checker; *linearizable* = the
Raft KV register checker (register runs only); *failover* = time from a fault to the first acknowledged
write on a new primary, median / max; *raftpg* = the commit the nodes ran (a snapshot of HEAD taken at the
start of the run); *history* = the run's history, relative to `jepsen-lite/` (run
directories are not committed: kept on the machine that ran them).

## Open defects

See the section of the same name in `jepsen-lite/README.md` (each INVALID run is listed there with what it
means for users).

## Runs

| run | seed | setup | faults | acked | lost | double primary | linearizable | failover p50 / max | verdict | raftpg | history |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def row_for(cell: Cell, summary: dict[str, Any]) -> str:
    setup = f"{cell.dcs}, {'2+w' if cell.witness else '3'}, {cell.mode}, " \
            f"{cell.workload}"
    failover = summary.get("failover", "-")
    return (f"| {cell.fault_class} | {cell.seed} | {setup} | {summary.get('faults', '-')} | "
            f"{summary.get('acked', '-')} | {summary.get('lost', '-')} | {summary.get('double_primary', '-')} | "
            f"{summary.get('linearizable', 'n/a')} | {failover} | {summary.get('verdict')} | "
            f"{summary.get('commit') or '-'} | `{summary.get('history', '-')}` |")


def append_row(results: Path, row: str) -> None:
    if not results.exists():
        results.write_text(RESULTS_HEADER)
    with open(results, "a", encoding="utf-8") as f:
        f.write(row + "\n")


def summarize(result: Any, out: Path) -> dict[str, Any]:
    """The table's figures from a RunResult."""
    def counts(name: str) -> dict[str, Any]:
        found = result.result(name)
        return dict(found.counts) if found is not None else {}

    nemesis, sets, bank = counts("nemesis"), counts("set"), counts("bank")
    primaries, register, availability = counts("no-concurrent-primaries"), counts("linearizable-register"), \
        counts("availability")
    bootstrap = counts("bootstrap")
    writes = sets or bank
    acked = writes.get("acknowledged", register.get("ok_ops", bootstrap.get("rounds")))
    verdict = result.verdict
    if verdict == "VALID" and acked is not None and acked < MIN_ACKED and not bootstrap:
        verdict = f"UNKNOWN ({acked} acked < {MIN_ACKED})"
    reg = result.result("linearizable-register")
    p50, worst = availability.get("median_failover_s"), availability.get("worst_failover_s")
    invalid = [r.name for r in result.results if r.valid is False]
    return {
        "faults": f"{nemesis.get('injected', 0)} ({nemesis.get('verified', 0)})",
        "acked": acked if acked is not None else "-",
        "lost": writes.get("lost", "-") if writes else "-",
        "double_primary": primaries.get("violations", "-") if primaries else "-",
        "linearizable": reg.verdict if reg is not None else "n/a",
        "failover": f"{p50:.1f} / {worst:.1f} s" if p50 is not None and worst is not None else "-",
        "verdict": verdict + (f": {', '.join(invalid)}" if invalid else ""),
        "history": str((out / "history.jsonl").relative_to(HERE)) if out.is_relative_to(HERE) else str(out),
    }


# ------------------------------------------------------------------ running


@contextlib.contextmanager
def heavy_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_cell(fc: FaultClass, cell: Cell, time_s: float, out: Path) -> Any:
    from jepsen_lite.runner import Runner, RunOptions
    from jepsen_lite.workloads import WorkloadOptions

    opts = RunOptions(
        nodes=2 if cell.witness else 3, witness=cell.witness, nemesis=fc.nemesis, time_s=time_s,
        seed=cell.seed, synchronous=cell.synchronous, quorum=cell.quorum, out=out, workload=cell.workload, dcs=cell.dcs,
        overlap=fc.overlap, quiet_s=(2.0, 5.0), workload_opts=WorkloadOptions(), raftpg_source="head")
    return Runner(opts).run()


SUPERSEDED_FILES = ("history.jsonl", "summary.txt", "nemesis.log", "run.json", "schedule.json")


def keep_superseded(out: Path, keep_dir: Path) -> Path | None:
    """Move a finished run's small files (not its node directories) to ``keep_dir/<cell>-<its date>``
    before the cell runs again; returns where they went (None: nothing to keep)."""
    files = [out / name for name in SUPERSEDED_FILES if (out / name).is_file()]
    if not files:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(max(f.stat().st_mtime for f in files)))
    dest = keep_dir / f"{out.name}-{stamp}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.move(str(f), dest / f.name)
    return dest


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2h, 45m, 600s)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def campaign_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepsen_lite campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=parse_duration, default=parse_duration("2h"),
                        help="stop starting runs once this much time has been spent (e.g. 2h, 45m)")
    parser.add_argument("--max-runs", type=int, default=None, help="at most this many runs in this invocation")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 1..N per fault class")
    parser.add_argument("--time", type=float, default=90.0, dest="time_s", help="seconds of faults per run")
    parser.add_argument("--classes", default="", help="comma-separated fault classes (default: all)")
    parser.add_argument("--state", type=Path, default=HERE / "campaign-state.json")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--runs-dir", type=Path, default=HERE / "runs" / "campaign")
    parser.add_argument("--lock", type=Path, default=Path("/tmp/raftpg-heavy.lock"),
                        help="taken for each run only ('' for none)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells that would run, then exit")
    args = parser.parse_args(argv)
    wanted = {c.strip() for c in args.classes.split(",") if c.strip()}
    unknown = wanted - {c.name for c in CLASSES}
    if unknown:
        print(f"error: unknown fault classes {sorted(unknown)}; known: {[c.name for c in CLASSES]}", file=sys.stderr)
        return 3
    classes = [c for c in CLASSES if not wanted or c.name in wanted]
    state = load_state(args.state)
    pending = [(fc, cell) for fc, cell in matrix(range(1, args.seeds + 1), classes) if cell.id not in state["runs"]]
    if args.dry_run:
        for _, cell in pending[: args.max_runs]:
            print(cell.id)
        print(f"{len(pending)} cells pending, {len(state['runs'])} done")
        return 0
    started, done = time.monotonic(), 0
    lock = args.lock if str(args.lock) not in ("", ".") else None  # Path("") reads as "."
    for fc, cell in pending:
        if args.max_runs is not None and done >= args.max_runs:
            break
        time_s = args.time_s * fc.time_factor
        if time.monotonic() - started + time_s + RUN_OVERHEAD_S > args.budget:
            print(f"budget spent: {time.monotonic() - started:.0f} s of {args.budget:.0f} s")
            break
        out = args.runs_dir / cell.id
        # a cell run again (its row superseded) starts from an empty directory: the old run's node
        # directories hold an etcd member of another subnet and old PostgreSQL data, which made the
        # new etcd cluster never become healthy. Its history and reports are kept first: an INVALID
        # row's history is what a regression input is trimmed from (regressions/README.md)
        keep_superseded(out, args.runs_dir / "superseded")
        shutil.rmtree(out, ignore_errors=True)
        print(f"== campaign: {cell.id} (waiting for {lock})" if lock else f"== campaign: {cell.id}", flush=True)
        with heavy_lock(lock):
            t0 = time.monotonic()
            result = run_cell(fc, cell, time_s, out)
        summary = summarize(result, out)
        commit = json.loads((out / "run.json").read_text()).get("raftpg_commit") if (out / "run.json").exists() \
            else None
        summary.update(cell=asdict(cell), duration_s=round(time.monotonic() - t0, 1),
                       date=time.strftime("%Y-%m-%d %H:%M"), commit=(commit or "")[:10])
        state["runs"][cell.id] = summary
        save_state(args.state, state)
        append_row(args.results, row_for(cell, summary))
        print(f"== campaign: {cell.id}: {summary['verdict']}", flush=True)
        done += 1
    left = len(pending) - done
    print(f"campaign: {done} runs this time, {len(state['runs'])} done in all, {left} pending")
    return 0
