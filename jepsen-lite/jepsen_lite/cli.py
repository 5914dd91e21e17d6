"""``python -m jepsen_lite HISTORY.jsonl [options]``: re-run the checkers offline on a stored history.

Exit status: 0 valid, 1 invalid, 2 unknown (inconclusive), 3 unreadable history.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jepsen_lite.checkers import CheckOptions, check_all, overall, summary
from jepsen_lite.history import History, HistoryError

EXIT = {"VALID": 0, "INVALID": 1, "UNKNOWN": 2}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepsen_lite", description=__doc__.splitlines()[0])
    parser.add_argument("history", help="JSON-lines history file")
    parser.add_argument("--async-replication", action="store_true",
                        help="lost acknowledged inserts only warn (asynchronous replication)")
    parser.add_argument("--min-acked", type=int, default=CheckOptions.min_acked)
    parser.add_argument("--min-epochs", type=int, default=CheckOptions.min_epochs)
    parser.add_argument("--min-register-ops", type=int, default=CheckOptions.min_register_ops)
    parser.add_argument("--register-max-seconds", type=float, default=CheckOptions.register_max_seconds)
    parser.add_argument("--gap-threshold-s", type=float, default=CheckOptions.gap_threshold_s)
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
        gap_threshold_s=args.gap_threshold_s,
        checkers=tuple(args.checkers) if args.checkers else None,
    )
    try:
        results = check_all(history, opts)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 3
    print(summary(results))
    return EXIT[overall(results)]
