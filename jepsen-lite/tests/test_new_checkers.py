"""Canaries for the checkers of issue 11: bank, no-concurrent-primaries with lease epochs (rule e),
clean-stop handover, bootstrap. Each rule has a history that breaks it (FAULTS.md §5.3) and a good one."""

from __future__ import annotations

from jepsen_lite.checkers import UNKNOWN, bank, bootstrap, check_all, handover, health, hygiene, primaries
from jepsen_lite.checkers.suite import applicable
from jl_builders import Builder

N, X = 3, 10  # accounts, initial balance: total 30


def _bank(transfers=(), finals=None, reads=(), setup=True, min_acked=1, **kw):
    """transfers: (id, src, dst, amount, outcome); finals: node -> (balances dict, log rows)."""
    b, t = Builder(), 0.0
    if setup:
        b.op("bank-setup", "bank-setup", None, t, t + 0.01, result={"accounts": N, "initial": X})
    t += 0.1
    for tid, src, dst, amount, outcome in transfers:
        b.op(1, "transfer", [tid, src, dst, amount], t, t + 0.05, type=outcome, primary="n1", timeline=1)
        t += 0.1
    for value in reads:
        b.op(5, "read-total", None, t, t + 0.05, result=value)
        t += 0.1
    applied = [(tid, s, d, a) for tid, s, d, a, o in transfers if o == "ok"]
    if finals is None:
        finals = {node: (_apply(applied), applied) for node in ("n1", "n2")}
    for node, (balances, log_rows) in finals.items():
        b.op(9, "bank-final", None, t, t + 0.05, node=node,
             result={"balances": sorted([k, v] for k, v in balances.items()),
                     "transfers": [list(r) for r in log_rows]})
        t += 0.1
    return bank.check(b.build(), min_acked=min_acked, **kw)


def _apply(rows):
    balances = {a: X for a in range(1, N + 1)}
    for _, src, dst, amount in rows:
        balances[src] -= amount
        balances[dst] += amount
    return balances


GOOD = [(1, 1, 2, 3, "ok"), (2, 2, 3, 1, "ok"), (3, 3, 1, 2, "fail")]


def test_bank_valid_history_passes() -> None:
    result = _bank(GOOD, reads=[[30, 3], [30, 3]])
    assert result.valid is True, result.details


def test_bank_read_of_money_in_flight_is_invalid() -> None:
    result = _bank(GOOD, reads=[[30, 3], [27, 3]])
    assert result.valid is False and "wrong total" in result.details[0]


def test_bank_half_applied_transfer_is_invalid() -> None:
    applied = [(1, 1, 2, 3), (2, 2, 3, 1)]
    balances = _apply(applied)
    balances[3] -= 1  # transfer 2's credit missing: the total changed too
    result = _bank(GOOD, finals={"n1": (balances, applied)})
    assert result.valid is False
    assert any("applied in half or twice" in d for d in result.details), result.details


def test_bank_transfer_applied_twice_keeps_the_total_but_is_invalid() -> None:
    applied = [(1, 1, 2, 3), (2, 2, 3, 1)]
    balances = _apply(applied + [(1, 1, 2, 3)])  # applied twice, logged once: the total is intact
    assert sum(balances.values()) == N * X
    result = _bank(GOOD, finals={"n1": (balances, applied)})
    assert result.valid is False and any("applied in half or twice" in d for d in result.details)


def test_bank_lost_acked_transfer_invalid_unless_async() -> None:
    rows = [(2, 2, 3, 1)]  # transfer 1 (acked) missing from the log and the balances
    finals = {"n1": (_apply(rows), rows)}
    assert _bank(GOOD, finals=finals).valid is False
    lenient = _bank(GOOD, finals=finals, lost_allowed=True)
    assert lenient.valid is True and any("WARNING" in d and "lost" in d for d in lenient.details)


def test_bank_failed_transfer_present_or_unexpected_or_divergent_is_invalid() -> None:
    with_failed = [(1, 1, 2, 3), (2, 2, 3, 1), (3, 3, 1, 2)]
    assert _bank(GOOD, finals={"n1": (_apply(with_failed), with_failed)}).valid is False
    unexpected = [(1, 1, 2, 3), (2, 2, 3, 1), (99, 1, 3, 1)]
    assert _bank(GOOD, finals={"n1": (_apply(unexpected), unexpected)}).valid is False
    applied = [(1, 1, 2, 3), (2, 2, 3, 1)]
    divergent = {"n1": (_apply(applied), applied), "n2": (_apply(applied[:1]), applied[:1])}
    assert _bank(GOOD, finals=divergent).valid is False


def test_bank_logged_transfer_differing_from_its_attempt_is_invalid() -> None:
    wrong = [(1, 1, 2, 4), (2, 2, 3, 1)]
    result = _bank(GOOD, finals={"n1": (_apply(wrong), wrong)})
    assert result.valid is False and any("differ from their attempt" in d for d in result.details)


def test_bank_without_setup_or_evidence_is_unknown() -> None:
    assert _bank(GOOD, setup=False).valid == UNKNOWN
    assert _bank(GOOD, min_acked=50).valid == UNKNOWN


def test_bank_histories_get_the_bank_and_primaries_checkers() -> None:
    b = Builder()
    b.op("bank-setup", "bank-setup", None, 0, 0.01, result={"accounts": N, "initial": X})
    b.op(1, "transfer", [1, 1, 2, 1], 0.1, 0.2, primary="n1", timeline=1)
    names = applicable(b.build())
    assert "bank" in names and "no-concurrent-primaries" in names and "set" not in names


# ------------------------------------------------------------------ lease epochs


def _epochs(*writes):
    """writes: (start, end, node, timeline, lease_epoch)"""
    b = Builder()
    for i, (start, end, node, timeline, epoch) in enumerate(writes):
        extra = {} if epoch is None else {"lease_epoch": epoch}
        b.op(i, "insert", i, start, end, node=node, primary=node, timeline=timeline, sysid="s", **extra)
    return primaries.check(b.build(), min_acked=1)


def test_lease_epoch_orders_epochs_exactly() -> None:
    # two promotions from one timeline both reach timeline 2: only the epoch tells them apart and orders them
    ok = _epochs((0, 1, "n1", 2, 7), (2, 3, "n2", 2, 9))
    assert ok.valid is True, ok.details
    stale = _epochs((0, 1, "n2", 2, 9), (2, 3, "n1", 2, 7))  # epoch 7 acked after epoch 9 had acked
    assert stale.valid is False and "stale epoch" in stale.details[0]


def test_rolled_back_term_under_a_new_lease_is_invalid() -> None:
    # n2 promoted to timeline 2 (epoch 5); n1 came back on timeline 1 with a later lease (epoch 8)
    result = _epochs((0, 1, "n1", 1, 3), (2, 3, "n2", 2, 5), (4, 5, "n1", 1, 8))
    assert result.valid is False and any("timeline regression" in d for d in result.details), result.details


def test_rolled_back_term_without_lease_epochs_is_a_stale_epoch() -> None:
    result = _epochs((0, 1, "n1", 1, None), (2, 3, "n2", 2, None), (4, 5, "n1", 1, None))
    assert result.valid is False and any("stale epoch" in d for d in result.details)


def test_epochs_fall_back_to_timelines_when_only_some_writes_carry_one() -> None:
    assert _epochs((0, 1, "n1", 1, None), (2, 3, "n2", 2, 4)).valid is True


# ------------------------------------------------------------------ handover


def _stops(*verifies):
    b = Builder()
    for i, value in enumerate(verifies):
        b.nemesis("stop-group", {"phase": "start", "id": i}, i * 10.0)
        b.nemesis("stop-group", {"phase": "verify", "id": i, "ok": True, "ttl_s": 10, **value}, i * 10.0 + 1)
        b.nemesis("stop-group", {"phase": "stop", "id": i}, i * 10.0 + 2)
    return b.build()


def test_clean_stop_of_the_primary_must_hand_over_at_once() -> None:
    fast = {"victim_was_primary": True, "replicas_streaming_before": 2, "handover_s": 1.2}
    slow = {"victim_was_primary": True, "replicas_streaming_before": 2, "handover_s": 9.6}
    never = {"victim_was_primary": True, "replicas_streaming_before": 2, "handover_s": None}
    assert handover.check(_stops(fast)).valid is True
    assert handover.check(_stops(fast, slow)).valid is False
    assert handover.check(_stops(never)).valid is False
    no_replica = {"victim_was_primary": True, "replicas_streaming_before": 0, "handover_s": None}
    replica = {"victim_was_primary": False, "handover_s": None}
    assert handover.check(_stops(no_replica, replica)).valid is True
    assert "handover" in [r.name for r in check_all(_stops(slow))]


# ------------------------------------------------------------------ bootstrap


def _rounds(*outcomes):
    b = Builder()
    for i, outcome in enumerate(outcomes):
        b.op("bootstrap", "bootstrap", {"round": i}, i * 10.0, i * 10.0 + 5, result={"round": i, **outcome})
    return bootstrap.check(b.build(), min_rounds=2)


GOOD_ROUND = {"converged": True, "converged_after_heal_s": 3.0, "sysids": {"n1": "7", "n2": "7"}, "primary": "n1"}


def test_bootstrap_rounds_must_converge_on_one_cluster() -> None:
    assert _rounds(GOOD_ROUND, GOOD_ROUND).valid is True
    stuck = {**GOOD_ROUND, "converged": False, "converged_after_heal_s": None}
    assert _rounds(GOOD_ROUND, stuck).valid is False
    foreign = {**GOOD_ROUND, "sysids": {"n1": "7", "n2": "8"}}
    result = _rounds(foreign, GOOD_ROUND)
    assert result.valid is False and "several system identifiers" in result.details[0]
    assert _rounds(GOOD_ROUND).valid == UNKNOWN


# --------------------------------------------------------------------------------- W6 health oracle


def _health(stale_answer: bool, polls: int = 30):
    """n1 is primary on timeline 1, then n2 on timeline 2 (its first acked write completes at t=10); the
    pollers ask GET /primary every 0.5 s; ``stale_answer``: n1 still says 200 on timeline 1 at t=10.2."""
    b = Builder()
    b.op(1, "insert", 1, 1.0, 1.05, node="n1", primary="n1", timeline=1)
    b.op(1, "insert", 2, 9.9, 10.0, node="n2", primary="n2", timeline=2)
    for i in range(polls):
        t = 0.5 * i
        n1_primary = t < 9.0 or (stale_answer and 10.0 < t < 10.6)
        b.op(30_000, "health", None, t, t + 0.02, node="n1", status=200 if n1_primary else 503,
             role="primary" if n1_primary else "replica", timeline=1)
        b.op(30_001, "health", None, t + 0.01, t + 0.03, node="n2", status=200 if t >= 9.5 else 503,
             timeline=2 if t >= 9.5 else 1)
    return b.build()


def test_health_oracle_passes_when_get_primary_follows_the_newest_primary() -> None:
    history = _health(stale_answer=False)
    result = health.check(history)
    assert result.valid is True, result.details
    assert result.counts["stale_200"] == 0 and result.counts["answers_200"] >= 20
    assert health.NAME in applicable(history)


def test_health_oracle_catches_a_200_after_a_newer_timeline_acknowledged_a_write() -> None:
    result = health.check(_health(stale_answer=True))
    assert result.valid is False and result.counts["stale_200"] == 1, result.details
    assert "n1 answered GET /primary 200 on timeline 1" in result.details[0] and "n2" in result.details[0]


def test_health_oracle_without_enough_answers_is_unknown_and_its_polls_are_not_client_ops() -> None:
    history = _health(stale_answer=False, polls=4)
    assert health.check(history).valid == UNKNOWN
    availability = next(r for r in check_all(history) if r.name == "availability")
    assert availability.counts["client_ops"] == 2


# --------------------------------------------------------------------------------- C8 hygiene


def test_hygiene_reports_each_traceback_and_unhandled_rest_error_with_its_node(tmp_path) -> None:
    for node in ("n1", "n2"):
        (tmp_path / node).mkdir()
    (tmp_path / "n1" / "agent.log").write_text(
        "2026-12-03 10:00:00,000 WARNING: cannot read the DCS: timed out\n"
        "2026-12-03 10:00:01,000 ERROR: cycle failed\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise KeyError("k")\nKeyError: \'k\'\n'
        "2026-12-03 10:00:02,000 ERROR: Error handling request from 10.0.0.1\n")
    (tmp_path / "n2" / "agent.log").write_text("2026-12-03 10:00:00,000 INFO: no action\n")
    result = hygiene.check_logs(tmp_path)
    assert result.valid is False and result.counts == {"logs": 2, "findings": 2}
    assert result.details[0] == "VIOLATION n1: traceback: KeyError: 'k'"
    assert result.details[1].startswith("VIOLATION n1: REST error:")
    (tmp_path / "n1" / "agent.log").write_text("2026-12-03 10:00:00,000 WARNING: fencing PostgreSQL\n")
    assert hygiene.check_logs(tmp_path).valid is True
    assert hygiene.check_logs(tmp_path / "nowhere").valid == UNKNOWN
