"""Bank checker (FAULTS.md W5): money is neither created nor destroyed, and every transfer is applied
whole, once, or not at all.

Input (see ``jepsen_lite.bank``): ``bank-setup`` (accounts, initial balance), ``transfer`` ops [id, src,
dst, amount], ``read-total`` reads [sum, count], final ``bank-final`` reads per node (balances and the
transfer log, one snapshot).

Violations, each invalid whatever the evidence:

- *wrong total*: an ok ``read-total`` whose sum or account count differs from accounts x initial (a reader
  saw money in flight: a transfer visible in half);
- *final state*: a node's final balances do not sum to the total, or differ from what its own transfer log
  implies (initial + credits - debits per account): a transfer applied in half, or twice;
- *log*: a logged transfer that was never attempted or differs from the attempt, a ``fail`` transfer in the
  log, an id logged twice, logs that differ between nodes (``sets.classify``, as for inserts);
- *lost*: an ``ok`` transfer absent from a final log (with ``lost_allowed``, asynchronous replication: a
  WARNING only, as for the set checker).

Unknown without ``bank-setup`` or a final read, or with fewer acked transfers than ``min_acked`` (counted
during faults when the history has faults).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from jepsen_lite.checkers import sets
from jepsen_lite.checkers.result import UNKNOWN, CheckResult, acked_evidence, evidence_detail, listed, verdict
from jepsen_lite.history import History, HistoryError, Pair

NAME = "bank"
MAX_DETAILS = 20


def check(history: History, *, lost_allowed: bool = False, min_acked: int = 200) -> CheckResult:
    setup = next((p.value for p in history.pairs if p.f == "bank-setup" and p.type == "ok"), None)
    if not isinstance(setup, Mapping):
        return CheckResult(NAME, UNKNOWN, {}, ("inconclusive: no bank-setup op in the history",))
    accounts, initial = int(setup["accounts"]), int(setup["initial"])
    total = accounts * initial
    attempts = _attempts([p for p in history.pairs if p.f == "transfer"])
    violations = _bad_totals(history, total, accounts)
    finals = {p.node or f"read@{p.invoke.index}": p.value for p in history.pairs
              if p.f == "bank-final" and p.type == "ok"}
    counts: dict[str, int | float] = {"attempted": len(attempts), "total": total,
                                      "reads": sum(p.f == "read-total" and p.type == "ok" for p in history.pairs),
                                      "final_reads": len(finals)}
    acked = [p for p in attempts.values() if p.type == "ok"]
    counts["acknowledged"] = len(acked)
    have, what = acked_evidence(acked, history.fault_windows)
    counts["evidence"] = have
    details: list[str] = []
    if finals:
        for node, value in sorted(finals.items()):
            violations += _final_state(node, value, accounts, initial, attempts)
        logs = {node: Counter(row[0] for row in value["transfers"]) for node, value in finals.items()}
        classes = sets.classify(attempts, logs)
        counts.update({name: len(values) for name, values in classes.items()})
        details += [d.replace("inserts", "transfers") for d in sets.describe(classes, logs, lost_allowed)]
        violated_log = any(classes[c] for c in sets.VIOLATING) or (bool(classes["lost"]) and not lost_allowed)
    else:
        violated_log = False
        details.append("inconclusive: no ok bank-final read in the history")
    counts["violations"] = len(violations)
    details = violations[:MAX_DETAILS] + details
    enough = have >= min_acked and bool(finals)
    if have < min_acked:
        details.append(evidence_detail(have, what, min_acked))
    return CheckResult(NAME, verdict(bool(violations) or violated_log, enough), counts, tuple(details))


def _attempts(transfers: Sequence[Pair]) -> dict[Hashable, Pair]:
    attempts: dict[Hashable, Pair] = {}
    for p in transfers:
        value = p.invoke.value
        if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value)):
            raise HistoryError(f"op {p.invoke.index}: transfer value must be [id, src, dst, amount], got {value!r}")
        if value[0] in attempts:
            raise HistoryError(f"op {p.invoke.index}: transfer id {value[0]} attempted twice")
        attempts[value[0]] = p
    return attempts


def _bad_totals(history: History, total: int, accounts: int) -> list[str]:
    bad = [p for p in history.pairs if p.f == "read-total" and p.type == "ok" and p.value != [total, accounts]]
    if not bad:
        return []
    return [f"VIOLATION wrong total: {len(bad)} reads saw another total than {total} over {accounts} accounts, "
            f"first {bad[0].describe()}"]


def _final_state(node: str, value: Any, accounts: int, initial: int, attempts: Mapping[Hashable, Pair]) -> list[str]:
    if not (isinstance(value, Mapping) and isinstance(value.get("balances"), list)
            and isinstance(value.get("transfers"), list)):
        raise HistoryError(f"bank-final on {node}: value must hold 'balances' and 'transfers' lists")
    balances = {int(a): int(b) for a, b in value["balances"]}
    found = []
    if len(balances) != accounts or sum(balances.values()) != accounts * initial:
        found.append(f"VIOLATION final state on {node}: {len(balances)} accounts holding {sum(balances.values())}, "
                     f"expected {accounts} holding {accounts * initial}")
    implied = {a: initial for a in balances}
    wrong_rows = []
    for tid, src, dst, amount in value["transfers"]:
        implied[src] = implied.get(src, initial) - amount
        implied[dst] = implied.get(dst, initial) + amount
        attempt = attempts.get(tid)
        if attempt is not None and list(attempt.invoke.value) != [tid, src, dst, amount]:
            wrong_rows.append(tid)
    off = {a: (balances.get(a), implied[a]) for a in implied if balances.get(a) != implied[a]}
    if off:
        found.append(f"VIOLATION final state on {node}: balances differ from what its transfer log implies "
                     f"(a transfer applied in half or twice): account: (balance, implied) {off}")
    if wrong_rows:
        found.append(f"VIOLATION final state on {node}: logged transfers differ from their attempt "
                     f"{listed(wrong_rows)}")
    return found
