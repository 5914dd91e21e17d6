"""``python -m jepsen_lite run ...`` records a history under faults; ``python -m jepsen_lite check HISTORY``
(or, as before, ``python -m jepsen_lite HISTORY``) re-runs the checkers offline on a stored history.

Exit status: 0 valid, 1 invalid, 2 unknown (inconclusive), 3 unreadable history / harness error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from jepsen_lite.checkers import CheckOptions, check_all, overall, summary
from jepsen_lite.history import History, HistoryError

EXIT = {"VALID": 0, "INVALID": 1, "UNKNOWN": 2}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        return run_main(args[1:])
    if args[:1] == ["check"]:
        return check_main(args[1:])
    if args[:1] == ["campaign"]:
        from jepsen_lite.campaign import campaign_main
        return campaign_main(args[1:])
    return check_main(args)


def check_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepsen_lite check",
                                     description="Re-run the checkers offline on a stored history.")
    parser.add_argument("history", help="JSON-lines history file")
    parser.add_argument("--async-replication", action="store_true",
                        help="lost acknowledged inserts only warn (asynchronous replication)")
    parser.add_argument("--min-acked", type=int, default=CheckOptions.min_acked)
    parser.add_argument("--min-epochs", type=int, default=CheckOptions.min_epochs)
    parser.add_argument("--min-register-ops", type=int, default=CheckOptions.min_register_ops)
    parser.add_argument("--register-max-seconds", type=float, default=CheckOptions.register_max_seconds)
    parser.add_argument("--gap-threshold-s", type=float, default=CheckOptions.gap_threshold_s)
    parser.add_argument("--min-bootstrap-rounds", type=int, default=CheckOptions.min_bootstrap_rounds)
    parser.add_argument("--checker", action="append", dest="checkers",
                        help="run only this checker (repeatable); default: those fitting the workload")
    args = parser.parse_args(argv)
    try:
        history = History.read(args.history)
    except (OSError, HistoryError) as e:
        print(f"cannot read {args.history}: {e}", file=sys.stderr)
        return 3
    opts = CheckOptions(
        lost_allowed=args.async_replication, min_acked=args.min_acked, min_epochs=args.min_epochs,
        min_register_ops=args.min_register_ops, register_max_seconds=args.register_max_seconds,
        gap_threshold_s=args.gap_threshold_s, min_bootstrap_rounds=args.min_bootstrap_rounds,
        checkers=tuple(args.checkers) if args.checkers else None,
    )
    try:
        results = check_all(history, opts)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 3
    print(summary(results))
    return EXIT[overall(results)]


def run_main(argv: Sequence[str]) -> int:
    from jepsen_lite.nemesis import FAULTS, GROUPS
    from jepsen_lite.runner import EXIT_HARNESS_ERROR, RunOptions, run
    from jepsen_lite.workloads import WorkloadOptions

    parser = argparse.ArgumentParser(
        prog="python -m jepsen_lite run",
        description="Run a raftpg cluster (or Raft KV nodes) in network namespaces under faults, record a "
                    "history and check it. Needs root. Wrap in `flock /tmp/raftpg-heavy.lock` on shared hosts.",
        epilog=f"nemeses: {', '.join(sorted(FAULTS))}; groups: {', '.join(sorted(GROUPS))}")
    parser.add_argument("--nodes", type=int, default=3, help="data nodes (agent + PostgreSQL), or KV nodes")
    parser.add_argument("--witness", action="store_true", help="add a witness node (w1)")
    parser.add_argument("--nemesis", default="all", help="comma-separated faults and groups ('' for none)")
    parser.add_argument("--time", type=float, default=300.0, dest="time_s", help="seconds of faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synchronous", action="store_true",
                        help="synchronous_mode: lost acknowledged writes are then a violation")
    parser.add_argument("--quorum", action="store_true",
                        help="synchronous_mode: quorum (quorum commit); lost acknowledged writes are a violation")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default jepsen-lite/runs/...)")
    parser.add_argument("--workload", choices=("set", "bank", "register", "bootstrap"), default="set",
                        help="set / bank: raftpg + PostgreSQL; register: Raft KV drivers (linearizability); "
                             "bootstrap: repeated bootstraps, each partitioned (no --nemesis)")
    parser.add_argument("--dcs", choices=("raft", "etcd3"), default="raft",
                        help="raft: the embedded Raft; etcd3: an etcd member in each data node's namespace")
    parser.add_argument("--overlap", type=int, default=1, metavar="K", help="up to K faults at once")
    parser.add_argument("--ttl", type=int, default=10, dest="ttl_s")
    parser.add_argument("--loop-wait", type=int, default=1, dest="loop_wait_s")
    parser.add_argument("--retry-timeout", type=int, default=4, dest="retry_timeout_s")
    parser.add_argument("--min-acked", type=int, default=200, help="evidence needed for a verdict")
    parser.add_argument("--quiet", type=float, nargs=2, default=(3.0, 8.0), metavar=("MIN", "MAX"),
                        help="seconds between faults, drawn uniformly (after the cluster is healthy)")
    parser.add_argument("--clients-per-node", type=int, default=2)
    parser.add_argument("--followers", type=int, default=1, help="clients writing via GET /primary")
    parser.add_argument("--interval", type=float, default=0.1, help="mean pause between a client's ops (s)")
    parser.add_argument("--kv-clients", type=int, default=5)
    parser.add_argument("--kv-stale-reads", action="store_true",
                        help="MUTANT: register reads from local state; the checker must flag it")
    parser.add_argument("--bank-split", action="store_true",
                        help="MUTANT: bank transfers not atomic; the bank checker must flag it")
    parser.add_argument("--foreign-scope", action="store_true",
                        help="MUTANT: bootstrap workload with one node in another cluster; must be flagged")
    parser.add_argument("--raftpg-source", choices=("head", "worktree"), default="worktree",
                        help="worktree: the nodes run raftpg as it is now, uncommitted edits included (default); "
                             "head: a snapshot of the committed raftpg (git archive HEAD), immune to edits made "
                             "during the run")
    parser.add_argument("--keep-data", action="store_true", help="keep data directories")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = RunOptions(
        nodes=args.nodes, witness=args.witness, nemesis=args.nemesis, time_s=args.time_s, seed=args.seed,
        synchronous=args.synchronous or args.quorum, quorum=args.quorum, out=args.out, workload=args.workload, ttl_s=args.ttl_s,
        dcs=args.dcs, overlap=args.overlap, foreign_scope=args.foreign_scope, raftpg_source=args.raftpg_source,
        loop_wait_s=args.loop_wait_s, retry_timeout_s=args.retry_timeout_s, min_acked=args.min_acked,
        quiet_s=tuple(args.quiet), keep_data=args.keep_data,
        workload_opts=WorkloadOptions(pinned_per_node=args.clients_per_node, followers=args.followers,
                                      interval_s=args.interval, kv_clients=args.kv_clients,
                                      stale_reads=args.kv_stale_reads, split_transfers=args.bank_split))
    try:
        result = run(opts)
    except (PermissionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    print(f"\nrun directory: {result.out}\nreport: {result.out / 'report.html'}\n")
    print((result.out / "summary.txt").read_text().rstrip())
    return result.exit_code
