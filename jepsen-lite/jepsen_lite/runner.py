"""One run: topology up, cluster up, clients writing, the seeded nemesis schedule, heal + settle, final reads,
teardown, then the checkers on the recorded history and the report.

Run directory (``--out``)::

    history.jsonl   every client op and nemesis event (jepsen_lite.history format)
    schedule.json   the seeded schedule; nemesis.log: what each fault did and its verification
    summary.txt     checker results (the same text is printed last); report.html + timeline.png
    nodes/<name>/   raftpg.yml (or raft.password), agent.log; data directories are removed at the end
    run.json        options, seed, timings

Cleanup runs in ``finally`` (and on SIGINT/SIGTERM, turned into ``Interrupted``): clients stopped, paused
processes continued, node processes stopped then killed by PID, namespaces (with their nftables tables) and
the harness veth removed, data directories deleted. Logs and histories stay.

Beside the checkers of ``jepsen_lite.checkers`` the runner adds two results of its own:
``nemesis`` (unknown if a fault could not be verified to have taken effect: FAULTS.md §5.4) and
``convergence`` (C7-lite: after heal + settle exactly one primary, every replica streaming and caught up,
one system identifier and timeline on all nodes; invalid if not reached in ``settle_s``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jepsen_lite import health
from jepsen_lite.checkers import CheckOptions, check_all, hygiene, overall, summary
from jepsen_lite.checkers.result import UNKNOWN, CheckResult
from jepsen_lite.cluster import PYTHON, ClusterOptions, KvCluster, NodeProcesses, RaftpgCluster, wait_until
from jepsen_lite.history import NEMESIS, History, HistoryWriter
from jepsen_lite.nemesis import (
    Env,
    Fault,
    FaultError,
    Step,
    expand,
    fault_for,
    make_schedule,
    needs,
    schedule_json,
)
from jepsen_lite.topology import Topology
from jepsen_lite.workloads import RegisterWorkload, SetWorkload, Workload, WorkloadOptions

log = logging.getLogger(__name__)
EXIT = {"VALID": 0, "INVALID": 1, "UNKNOWN": 2}
EXIT_HARNESS_ERROR = 3


class Interrupted(Exception):
    pass


@dataclass
class RunOptions:
    nodes: int = 3
    witness: bool = False
    nemesis: str = "all"
    time_s: float = 300.0
    seed: int = 0
    synchronous: bool = False
    quorum: bool = False  # synchronous_mode: quorum (with synchronous: lost acknowledged writes are violations)
    out: Path | None = None
    workload: str = "set"  # "set" or "bank" (raftpg + PostgreSQL), "register" (Raft KV), "bootstrap"
    dcs: str = "raft"  # "raft" (embedded) or "etcd3" (an etcd member in every data node's namespace)
    overlap: int = 1  # up to this many faults at once
    foreign_scope: bool = False  # MUTANT of the bootstrap workload: one node configured into another cluster
    # "worktree": raftpg as it is; "head": a snapshot of the committed raftpg (JL_RAFTPG_SOURCE sets the default)
    raftpg_source: str = field(default_factory=lambda: os.environ.get("JL_RAFTPG_SOURCE", "worktree"))
    ttl_s: int = 10
    loop_wait_s: int = 1
    retry_timeout_s: int = 4
    startup_s: float = 120.0
    healthy_s: float = 60.0
    settle_s: float = 120.0
    min_acked: int = 200
    quiet_s: tuple[float, float] = (3.0, 8.0)  # pause between faults, after the cluster is healthy again
    workload_opts: WorkloadOptions = field(default_factory=WorkloadOptions)
    keep_data: bool = False


@dataclass
class RunResult:
    out: Path
    results: list[CheckResult]
    verdict: str

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def result(self, name: str) -> CheckResult | None:
        return next((r for r in self.results if r.name == name), None)


def default_out(seed: int) -> Path:
    base = Path(__file__).resolve().parent.parent / "runs"
    return base / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"


class Runner:
    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.out = (opts.out or default_out(opts.seed)).resolve()
        self.kind = "kv" if opts.workload == "register" else "raftpg"
        if opts.workload not in ("set", "bank", "register", "bootstrap"):
            raise ValueError(f"unknown workload {opts.workload!r}: set, bank, register or bootstrap")
        if opts.dcs not in ("raft", "etcd3"):
            raise ValueError(f"--dcs must be raft or etcd3, got {opts.dcs!r}")
        if opts.dcs == "etcd3" and (opts.witness or self.kind == "kv"):
            raise ValueError("--dcs etcd3 works with data nodes only (a witness and the KV drivers are Raft)")
        self.faults = [] if opts.workload == "bootstrap" or not opts.nemesis else \
            expand(opts.nemesis, self.kind, opts.dcs)
        required = needs(self.faults)
        if opts.raftpg_source not in ("head", "worktree"):
            raise ValueError(f"--raftpg-source must be head or worktree, got {opts.raftpg_source!r}")
        self.source_commit: str | None = None
        self.cluster_opts = ClusterOptions(
            nodes=opts.nodes, witness=opts.witness, synchronous=opts.synchronous, quorum=opts.quorum,
            ttl_s=opts.ttl_s,
            loop_wait_s=opts.loop_wait_s, retry_timeout_s=opts.retry_timeout_s,
            faketime="faketime" in required, dcs=opts.dcs, smallfs="smallfs" in required)
        self.t0 = time.monotonic()
        self.topology: Topology | None = None
        self.cluster: NodeProcesses | None = None
        self.workload: Workload | None = None
        self.history: HistoryWriter | None = None
        self.nemesis_log: Any = None
        self.fault_verdicts: list[tuple[str, bool | None, str]] = []  # ok None: not started
        self.convergence: CheckResult | None = None
        self.timings: dict[str, float] = {}
        self.cleaning = False

    # ------------------------------------------------------------------ helpers
    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def say(self, message: str) -> None:
        line = f"[{self.now():8.3f}] {message}"
        print(line, flush=True)
        if self.nemesis_log is not None:
            self.nemesis_log.write(line + "\n")
            self.nemesis_log.flush()

    def nemesis_event(self, f: str, value: dict[str, Any]) -> None:
        assert self.history is not None
        self.history.append(NEMESIS, "info", f, value)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self.out.chmod(0o755)
        if self.opts.raftpg_source == "head":
            source, self.source_commit = snapshot_raftpg(self.out / "src")
            self.cluster_opts = replace(self.cluster_opts, source=source)
        steps = make_schedule(self.faults, self.opts.seed, self.opts.time_s, self.opts.ttl_s, self.opts.quiet_s,
                              overlap=self.opts.overlap)
        (self.out / "schedule.json").write_text(schedule_json(steps))
        self._write_run_json(steps_planned=len(steps))
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def interrupt(signum: int, _frame: Any) -> None:
            if self.cleaning:  # a second Ctrl-C, or one during cleanup, must not abort the cleanup
                print(f"signal {signum}: cleaning up, please wait", flush=True)
                return
            self.cleaning = True
            raise Interrupted(f"signal {signum}")

        if threading.current_thread() is threading.main_thread():
            for sig in previous:
                signal.signal(sig, interrupt)
        harness_error = None
        try:
            with open(self.out / "history.jsonl", "w", encoding="utf-8") as hist, \
                    open(self.out / "nemesis.log", "w", encoding="utf-8") as nlog:
                self.nemesis_log = nlog
                self.history = HistoryWriter(hist, self.now)
                try:
                    self._run(steps)
                except (Interrupted, KeyboardInterrupt) as exc:
                    harness_error = f"interrupted: {exc}"
                    self.say(harness_error)
                except Exception as exc:  # noqa: BLE001 - report, clean up, exit as inconclusive
                    log.exception("run failed")
                    harness_error = f"harness error: {type(exc).__name__}: {exc}"
                    self.say(harness_error)
                finally:
                    self.cleaning = True
                    self._teardown()
                    self.nemesis_log = None
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self._check(harness_error)

    def _run(self, steps: list[Step]) -> None:
        opts = self.opts
        names = self.cluster_opts.names
        self.say(f"run {self.out.name}: {self.kind} cluster {names} on {opts.dcs}, workload {opts.workload}, "
                 f"nemeses {self.faults}, {len(steps)} steps planned, seed {opts.seed}")
        self.topology = Topology(names)
        self.topology.create()
        self.say(f"topology: subnet 10.213.{self.topology.k}.0/24, namespaces {self.topology.prefix}-*")
        cluster_cls = KvCluster if self.kind == "kv" else RaftpgCluster
        self.cluster = cluster_cls(self.topology, self.out, self.cluster_opts)
        self.cluster.prepare()
        if opts.workload == "bootstrap":
            from jepsen_lite.bootstrap import BootstrapLoop
            assert isinstance(self.cluster, RaftpgCluster) and self.history is not None
            BootstrapLoop(self.cluster, self.topology, self.history, self.say, opts).run()
            return
        self.cluster.start_all()
        if not wait_until(self.healthy, opts.startup_s, 1.0):
            raise RuntimeError(f"cluster not healthy within {opts.startup_s:g}s of starting")
        self.timings["startup_s"] = self.now()
        self.say(f"cluster healthy: {self.describe()}")
        self.workload = self._workload()
        self.workload.setup()
        self.workload.start()
        if isinstance(self.cluster, RaftpgCluster):  # W6: what GET /primary tells a load balancer
            from jepsen_lite.health_oracle import pollers
            for poller in pollers(self.cluster, self.history, opts.seed):
                self.workload.adopt(poller)
        self.say(f"workload {opts.workload}: {len(self.workload.clients)} clients")
        self.sleep(3.0)
        deadline = time.monotonic() + opts.time_s
        for step in steps:
            if time.monotonic() + step.hold_s + 3 > deadline:
                break
            self._run_step(step)
            if time.monotonic() >= deadline:
                break
        if not steps:  # no faults: the workload still runs for the time asked
            self.sleep(deadline - time.monotonic())
        self.timings["faults_end_s"] = self.now()
        self.say("schedule done: heal and settle")
        self._heal()
        settled = wait_until(self.healthy, opts.settle_s, 1.0)
        self.sleep(2.0)
        self.workload.stop()
        self.say(f"clients stopped ({self.workload.ok_ops()} ops); settled={bool(settled)}")
        assert self.cluster is not None
        self.convergence = health.converge(self.cluster, bool(settled), opts.settle_s)
        read_all = getattr(self.workload, "read_all", None)
        if read_all is not None:
            counts = read_all()
            self.say(f"final reads: {counts}")
            if self.convergence.valid is True and any(c is None for c in counts.values()):
                self.convergence = CheckResult("convergence", False, {}, (f"final read failed: {counts}",))

    def _workload(self) -> Workload:
        assert self.history is not None and self.cluster is not None
        opts = self.opts
        if isinstance(self.cluster, KvCluster):
            return RegisterWorkload(self.history, opts.workload_opts, opts.seed, self.cluster)
        assert isinstance(self.cluster, RaftpgCluster)
        if opts.workload == "bank":
            from jepsen_lite.bank import BankWorkload
            return BankWorkload(self.history, opts.workload_opts, opts.seed, self.cluster)
        return SetWorkload(self.history, opts.workload_opts, opts.seed, self.cluster)

    def _env(self, step: Step) -> Env:
        assert self.cluster is not None and self.topology is not None
        return Env(self.topology, self.cluster, self.opts.ttl_s, self.opts.loop_wait_s,
                   random.Random(f"{self.opts.seed}-{step.index}"), self.say, self.workload)

    def _start_fault(self, step: Step) -> Fault | None:
        """Start and verify one fault; None if it could not be started."""
        fault = fault_for(step, self._env(step))
        # the fault's window opens before start() is called, as Jepsen's nemesis :invoke does: an
        # administrative fault (a switchover, a kill in the middle of one) does all its harm inside
        # start(), so a window opened after it returned held almost no client ops (admin cells were
        # UNKNOWN on "1 acknowledged op during faults") and recovery was timed from after the switchover
        self.nemesis_event(step.fault, {"phase": "start", "id": step.index})
        try:
            details = fault.start()
        except FaultError as exc:
            self.nemesis_event(step.fault, {"phase": "stop", "id": step.index, "not_started": str(exc)})
            self.say(f"step {step.index} {step.fault}: not started: {exc}")
            self.fault_verdicts.append((step.fault, None, f"not started: {exc}"))
            return None
        self.nemesis_event(step.fault, {"phase": "started", "id": step.index, **_jsonable(details)})
        self.say(f"step {step.index} {step.fault} start {details}")
        try:
            ok, evidence = fault.verify()
        except Exception as exc:  # noqa: BLE001 - a probe that crashed proves nothing: unverified
            ok, evidence = False, {"verify_error": f"{type(exc).__name__}: {exc}"}
        self.nemesis_event(step.fault, {"phase": "verify", "id": step.index, "ok": ok, **_jsonable(evidence)})
        self.say(f"step {step.index} {step.fault} verify ok={ok} {evidence}")
        self.fault_verdicts.append((step.fault, ok, json.dumps(_jsonable(evidence))[:300]))
        return fault

    def _stop_fault(self, step: Step, fault: Fault) -> None:
        try:
            stopped = fault.stop()
        except Exception as exc:  # noqa: BLE001 - heal() at the end undoes what a failed stop left
            log.exception("stop of %s failed", step.fault)
            stopped = {"stop_error": f"{type(exc).__name__}: {exc}"}
        self.nemesis_event(step.fault, {"phase": "stop", "id": step.index, **_jsonable(stopped)})
        self.say(f"step {step.index} {step.fault} stop {stopped}")

    def _run_step(self, step: Step) -> None:
        """Wait for a healthy cluster; start the fault and its overlapping companions (each ``offset_s``
        after the previous one), hold, stop the companions (last first), then the fault; quiet time."""
        assert self.cluster is not None
        if not wait_until(self.healthy, self.opts.healthy_s, 1.0):
            self.say(f"step {step.index}: cluster still unhealthy after {self.opts.healthy_s:g}s "
                     f"({self.describe()}); injecting anyway")
        started = time.monotonic()
        running: list[tuple[Step, Fault]] = []
        try:
            main = self._start_fault(step)
            if main is None:
                return
            running.append((step, main))
            for companion in step.overlap:
                self.sleep(companion.offset_s)
                fault = self._start_fault(companion)
                if fault is not None:
                    running.append((companion, fault))
            self.sleep(step.hold_s - (time.monotonic() - started))
        finally:
            for s, fault in reversed(running):
                self._stop_fault(s, fault)
        self.sleep(step.quiet_s)

    def _heal(self) -> None:
        assert self.cluster is not None and self.topology is not None
        self.topology.heal()
        self.cluster.resume_all()
        if isinstance(self.cluster, RaftpgCluster):
            for fs in self.cluster.filesystems.values():
                fs.release()
        for name in self.cluster.names:
            if self.cluster.opts.faketime:
                self.cluster.set_clock_offset(name, "+0")
            if not self.cluster.alive(name):
                self.say(f"heal: restarting {name}")
                self.cluster.start(name)

    # ------------------------------------------------------------------ health
    def healthy(self) -> bool:
        return health.healthy(self.cluster)

    def describe(self) -> str:
        return health.describe(self.cluster)

    # ------------------------------------------------------------------ teardown + check
    def _teardown(self) -> None:
        self.timings["end_s"] = self.now()
        with contextlib.suppress(Exception):
            if self.workload is not None:
                self.workload.stop(timeout_s=20)
        if self.cluster is not None:
            try:
                self.cluster.close(keep_data=self.opts.keep_data)
            except Exception:  # noqa: BLE001
                log.exception("cluster cleanup failed")
        if self.cluster_opts.source is not None and not self.opts.keep_data:
            shutil.rmtree(self.cluster_opts.source, ignore_errors=True)
        if self.topology is not None:
            try:
                self.topology.destroy()
                left = self.topology.leftovers()
                if left:
                    self.say(f"WARNING: left over after cleanup: {left}")
            except Exception:  # noqa: BLE001
                log.exception("topology cleanup failed")
        self._write_run_json()

    def _write_run_json(self, **extra: Any) -> None:
        path = self.out / "run.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.opts).items()},
                    faults=self.faults, timings=self.timings, raftpg_commit=self.source_commit, **extra)
        path.write_text(json.dumps(data, indent=1, default=str))

    def check_options(self) -> CheckOptions:
        return CheckOptions(lost_allowed=not self.opts.synchronous, min_acked=self.opts.min_acked)

    def _check(self, harness_error: str | None) -> RunResult:
        history = History.read(self.out / "history.jsonl")
        results = check_all(history, self.check_options())
        results.append(self._nemesis_result())
        results.append(hygiene.check_logs(self.out / "nodes"))
        if self.convergence is not None:
            results.append(self.convergence)
        if harness_error:
            results.append(CheckResult("harness", UNKNOWN, {}, (harness_error,)))
        text = summary(results)
        (self.out / "summary.txt").write_text(text + "\n")
        try:
            from jepsen_lite.report import write_report
            write_report(self.out, history, results, self.fault_verdicts)
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not hide the verdict
            log.warning("report not written: %s", exc)
        return RunResult(self.out, results, overall(results))

    def _nemesis_result(self) -> CheckResult:
        started = [(f, ok, ev) for f, ok, ev in self.fault_verdicts if ok is not None]
        injected = len(started)
        unverified = [(f, ev) for f, ok, ev in started if not ok]
        counts: dict[str, int | float] = {"injected": injected, "verified": injected - len(unverified),
                                          "unverified": len(unverified),
                                          "not_started": len(self.fault_verdicts) - injected}
        per_kind: dict[str, int] = {}
        for f, _, _ in started:
            per_kind[f] = per_kind.get(f, 0) + 1
        details = [f"{k}: {v}" for k, v in sorted(per_kind.items())]
        details += [f"not started {f}: {ev}" for f, ok, ev in self.fault_verdicts if ok is None]
        details += [f"UNVERIFIED {f}: {ev}" for f, ev in unverified]
        valid: Any = True
        if unverified:
            valid = UNKNOWN
            details.append("inconclusive: some faults could not be shown to have taken effect")
        if self.faults and not injected:
            valid = UNKNOWN
            details.append("inconclusive: no fault was injected")
        return CheckResult("nemesis", valid, counts, tuple(details))


IMPORT_CHECK = ("import raftpg.node, raftpg.api.wiring, raftpg.ha.loop, raftpg.cli.main, raftpg.testing.raft_driver, "
                "raftpg.pg.supervisor")


def snapshot_raftpg(dest: Path, tries: int = 10) -> tuple[Path, str]:
    """Export the committed ``raftpg`` package (``git archive``) into ``dest``: the nodes run that, not the
    working tree, which other engineers may be editing mid-run. The newest of the last ``tries`` commits
    whose package imports (HEAD itself may be a partial commit that depends on uncommitted files) is used.
    Returns (dest, commit)."""
    repo = Path(__file__).resolve().parent.parent.parent
    commits = subprocess.run(["git", "-C", str(repo), "rev-list", f"--max-count={tries}", "HEAD"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.split()
    for commit in commits:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", commit, "raftpg"], capture_output=True,
                                 check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
        check = subprocess.run([PYTHON, "-c", IMPORT_CHECK], cwd="/", capture_output=True, text=True, timeout=120,
                               env={"PYTHONPATH": str(dest), "PATH": "/usr/bin:/bin"})
        if check.returncode == 0:
            break
        log.warning("raftpg at %s does not import (%s): trying its parent", commit[:10],
                    (check.stderr.strip().splitlines() or ["?"])[-1])
    else:
        raise RuntimeError(f"none of the last {tries} commits has an importable raftpg package")
    for root, dirs, files in os.walk(dest):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    dest.chmod(0o755)
    return dest, commit


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run(opts: RunOptions) -> RunResult:
    if os.geteuid() != 0:
        raise PermissionError("jepsen-lite run needs root (network namespaces, nftables)")
    return Runner(opts).run()
