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
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from jepsen_lite.checkers import CheckOptions, check_all, overall, summary
from jepsen_lite.checkers.result import UNKNOWN, CheckResult
from jepsen_lite.cluster import ClusterOptions, KvCluster, NodeProcesses, RaftpgCluster, wait_until
from jepsen_lite.history import NEMESIS, History, HistoryWriter
from jepsen_lite.nemesis import Env, FaultError, expand, fault_for, make_schedule, schedule_json
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
    out: Path | None = None
    workload: str = "set"  # "set" (raftpg + PostgreSQL) or "register" (Raft KV drivers)
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
        self.faults = expand(opts.nemesis, self.kind) if opts.nemesis else []
        self.cluster_opts = ClusterOptions(
            nodes=opts.nodes, witness=opts.witness, synchronous=opts.synchronous, ttl_s=opts.ttl_s,
            loop_wait_s=opts.loop_wait_s, retry_timeout_s=opts.retry_timeout_s,
            faketime="clock" in self.faults)
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
        steps = make_schedule(self.faults, self.opts.seed, self.opts.time_s, self.opts.ttl_s, self.opts.quiet_s)
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

    def _run(self, steps: list[Any]) -> None:
        opts = self.opts
        names = self.cluster_opts.names
        self.say(f"run {self.out.name}: {self.kind} cluster {names}, nemeses {self.faults}, "
                 f"{len(steps)} steps planned, seed {opts.seed}")
        self.topology = Topology(names)
        self.topology.create()
        self.say(f"topology: subnet 10.213.{self.topology.k}.0/24, namespaces {self.topology.prefix}-*")
        cluster_cls = KvCluster if self.kind == "kv" else RaftpgCluster
        self.cluster = cluster_cls(self.topology, self.out, self.cluster_opts)
        self.cluster.prepare()
        self.cluster.start_all()
        if not wait_until(self.healthy, opts.startup_s, 1.0):
            raise RuntimeError(f"cluster not healthy within {opts.startup_s:g}s of starting")
        self.timings["startup_s"] = self.now()
        self.say(f"cluster healthy: {self.describe()}")
        assert self.history is not None
        if self.kind == "kv":
            self.workload = RegisterWorkload(self.history, opts.workload_opts, opts.seed, self.cluster)
        else:
            self.workload = SetWorkload(self.history, opts.workload_opts, opts.seed, self.cluster)
        self.workload.setup()
        self.workload.start()
        self.say(f"workload {opts.workload}: {len(self.workload.clients)} clients")
        self.sleep(3.0)
        deadline = time.monotonic() + opts.time_s
        for step in steps:
            if time.monotonic() + step.hold_s + 3 > deadline:
                break
            self._run_step(step)
            if time.monotonic() >= deadline:
                break
        self.say("schedule done: heal and settle")
        self._heal()
        settled = wait_until(self.healthy, opts.settle_s, 1.0)
        self.sleep(2.0)
        self.workload.stop()
        self.say(f"clients stopped ({self.workload.ok_ops()} ops); settled={bool(settled)}")
        caught_up = self._converge(bool(settled))
        if isinstance(self.workload, SetWorkload):
            counts = self.workload.read_all()
            self.say(f"final reads: {counts}")
            if caught_up and any(c is None for c in counts.values()):
                self.convergence = CheckResult("convergence", False, {}, (f"final read failed: {counts}",))

    def _run_step(self, step: Any) -> None:
        assert self.cluster is not None and self.topology is not None
        if not wait_until(self.healthy, self.opts.healthy_s, 1.0):
            self.say(f"step {step.index}: cluster still unhealthy after {self.opts.healthy_s:g}s "
                     f"({self.describe()}); injecting anyway")
        env = Env(self.topology, self.cluster, self.opts.ttl_s, self.opts.loop_wait_s,
                  random.Random(f"{self.opts.seed}-{step.index}"), self.say)
        fault = fault_for(step, env)
        try:
            details = fault.start()
        except FaultError as exc:
            self.say(f"step {step.index} {step.fault}: not started: {exc}")
            self.fault_verdicts.append((step.fault, None, f"not started: {exc}"))
            return
        started = time.monotonic()
        self.nemesis_event(step.fault, {"phase": "start", "id": step.index, **_jsonable(details)})
        self.say(f"step {step.index} {step.fault} start {details}")
        try:
            try:
                ok, evidence = fault.verify()
            except Exception as exc:  # noqa: BLE001 - a probe that crashed proves nothing: unverified
                ok, evidence = False, {"verify_error": f"{type(exc).__name__}: {exc}"}
            self.nemesis_event(step.fault, {"phase": "verify", "id": step.index, "ok": ok, **_jsonable(evidence)})
            self.say(f"step {step.index} {step.fault} verify ok={ok} {evidence}")
            self.fault_verdicts.append((step.fault, ok, json.dumps(_jsonable(evidence))[:300]))
            self.sleep(step.hold_s - (time.monotonic() - started))
        finally:
            stopped = fault.stop()
            self.nemesis_event(step.fault, {"phase": "stop", "id": step.index, **_jsonable(stopped)})
            self.say(f"step {step.index} {step.fault} stop {stopped}")
        self.sleep(step.quiet_s)

    def _heal(self) -> None:
        assert self.cluster is not None and self.topology is not None
        self.topology.heal()
        self.cluster.resume_all()
        for name in self.cluster.names:
            if self.cluster.opts.faketime:
                self.cluster.set_clock_offset(name, "+0")
            if not self.cluster.alive(name):
                self.say(f"heal: restarting {name}")
                self.cluster.start(name)

    # ------------------------------------------------------------------ health
    def healthy(self) -> bool:
        cluster = self.cluster
        if cluster is None or not all(cluster.alive(n) for n in cluster.names):
            return False
        if isinstance(cluster, KvCluster):
            statuses = [cluster.control(n, "GET", "/status", timeout_s=1.0) for n in cluster.names]
            leaders = {b.get("leader") for c, b in statuses if c == 200 and isinstance(b, dict)}
            return len(statuses) == len(cluster.names) and all(c == 200 for c, _ in statuses) \
                and len(leaders) == 1 and None not in leaders
        assert isinstance(cluster, RaftpgCluster)
        primaries = cluster.primaries()
        if len(primaries) != 1:
            return False
        for name in cluster.names:
            if cluster.members[name].witness and cluster.api(name, "GET", "/liveness")[0] != 200:
                return False
        return self._streaming(primaries[0]) >= len(cluster.data_names) - 1

    def _streaming(self, primary: str) -> int:
        assert isinstance(self.cluster, RaftpgCluster)
        try:
            with psycopg.connect(self.cluster.dsn(primary), autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                                    ).fetchone()[0]
        except psycopg.Error:
            return -1

    def describe(self) -> str:
        cluster = self.cluster
        if isinstance(cluster, RaftpgCluster):
            return f"primaries={cluster.primaries()} raft_leader={cluster.raft_leader()} " \
                   f"alive={[n for n in cluster.names if cluster.alive(n)]}"
        if cluster is not None:
            return f"raft_leader={cluster.raft_leader()} alive={[n for n in cluster.names if cluster.alive(n)]}"
        return "no cluster"

    def _converge(self, settled: bool) -> bool:
        """C7-lite: one primary, every replica caught up to the primary's WAL position, one sysid/timeline."""
        cluster = self.cluster
        if not isinstance(cluster, RaftpgCluster):
            ok = settled
            self.convergence = CheckResult("convergence", ok, {}, () if ok else (
                f"no stable Raft leader within {self.opts.settle_s:g}s after heal: {self.describe()}",))
            return ok
        details: list[str] = []
        primary = cluster.primary() if settled else None
        if primary is None:
            details.append(f"not healthy within {self.opts.settle_s:g}s after heal: {self.describe()}")
            self.convergence = CheckResult("convergence", False, {}, tuple(details))
            return False
        try:
            with psycopg.connect(cluster.dsn(primary), autocommit=True) as conn:
                target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        except psycopg.Error as exc:
            self.convergence = CheckResult("convergence", False, {}, (f"primary {primary} unreadable: {exc}",))
            return False
        identities: dict[str, tuple[str, int] | None] = {}

        def caught_up(name: str) -> bool:
            try:
                with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false), "
                        "(SELECT system_identifier FROM pg_control_system()), "
                        "(SELECT timeline_id FROM pg_control_checkpoint())", (str(target),)).fetchone()
            except psycopg.Error:
                return False
            identities[name] = (str(row[2]), row[3])
            return bool(row[0] and row[1]) or name == primary

        start = time.monotonic()
        lagging = [n for n in cluster.data_names if n != primary]
        while lagging and time.monotonic() - start < 60:
            lagging = [n for n in lagging if not caught_up(n)]
            if lagging:
                time.sleep(0.5)
        caught_up(primary)
        sysids = {i[0] for i in identities.values() if i}
        counts = {"caught_up_s": round(time.monotonic() - start, 2), "nodes": len(cluster.data_names)}
        if lagging:
            details.append(f"replicas not caught up with {primary} at {target} within 60s: {lagging}")
        if len(sysids) > 1:
            details.append(f"several system identifiers after settle: {identities}")
        details.append(f"primary {primary}; identities {identities}")
        ok = not lagging and len(sysids) <= 1
        self.convergence = CheckResult("convergence", ok, counts, tuple(details))
        return ok

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
                    faults=self.faults, timings=self.timings, **extra)
        path.write_text(json.dumps(data, indent=1, default=str))

    def check_options(self) -> CheckOptions:
        return CheckOptions(lost_allowed=not self.opts.synchronous, min_acked=self.opts.min_acked)

    def _check(self, harness_error: str | None) -> RunResult:
        history = History.read(self.out / "history.jsonl")
        results = check_all(history, self.check_options())
        results.append(self._nemesis_result())
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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run(opts: RunOptions) -> RunResult:
    if os.geteuid() != 0:
        raise PermissionError("jepsen-lite run needs root (network namespaces, nftables)")
    return Runner(opts).run()
