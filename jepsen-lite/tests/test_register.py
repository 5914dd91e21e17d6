"""C3 linearizable register: hand-made canaries, hand-made valid histories, and hypothesis properties."""

import random

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jepsen_lite.checkers import UNKNOWN, register
from jepsen_lite.history import History
from jl_builders import Builder


def _check(h, **kw):
    return register.check(h, min_ops=kw.pop("min_ops", 1), **kw)


def _w(b, p, v, s, e, **kw):
    return b.op(p, "write", v, s, e, **kw)


def _r(b, p, v, s, e, **kw):
    return b.op(p, "read", None, s, e, result=v, **kw)


# ---- must fail ---------------------------------------------------------------------------------------

def test_read_of_a_value_never_written_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    _r(b, 2, 2, 2, 3)
    r = _check(b.build())
    assert r.valid is False and r.counts["nonlinearizable_keys"] == 1
    assert any("could not be linearized: read -> 2" in d for d in r.details)


def test_stale_read_after_a_completed_write_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    _w(b, 1, 2, 2, 3)
    _r(b, 2, 1, 4, 5)
    r = _check(b.build())
    assert r.valid is False
    assert any("Longest linearizable prefix: 2 ops, register = 2" in d for d in r.details)


def test_two_writes_then_two_conflicting_reads_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0, 10)
    _w(b, 2, 2, 0, 10)
    _r(b, 3, 1, 11, 14)
    _r(b, 4, 2, 11, 14)
    assert _check(b.build()).valid is False


def test_reads_going_back_in_time_are_invalid():
    b = Builder()
    _w(b, 1, 1, 0, 10)
    _w(b, 2, 2, 0, 10)
    _r(b, 3, 2, 1, 2)
    _r(b, 3, 1, 3, 4)
    _r(b, 3, 2, 5, 6)   # the value 2 can only be current once: 2 -> 1 -> 2 needs a third write
    assert _check(b.build()).valid is False


def test_cas_that_succeeded_against_the_wrong_value_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    b.op(2, "cas", [2, 3], 2, 3)
    assert _check(b.build()).valid is False


def test_cas_whose_compare_failed_although_it_must_have_matched_is_invalid():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    b.op(2, "cas", [1, 2], 2, 3, type="fail")
    assert _check(b.build()).valid is False


def test_failed_write_that_is_read_is_invalid():
    b = Builder()
    _w(b, 1, 5, 0, 1, type="fail")
    _r(b, 2, 5, 2, 3)
    assert _check(b.build()).valid is False


def test_info_write_cannot_take_effect_before_its_invoke():
    b = Builder()
    _r(b, 1, 5, 0, 1)
    _w(b, 2, 5, 2, None, type="info")
    assert _check(b.build()).valid is False


def test_keys_are_checked_independently_and_the_bad_one_is_named():
    b = Builder()
    _w(b, 1, 1, 0, 1, key="a")
    _r(b, 2, 1, 2, 3, key="a")
    _w(b, 1, 1, 4, 5, key="b")
    _r(b, 2, 7, 6, 7, key="b")
    r = _check(b.build())
    assert r.valid is False and r.counts["keys"] == 2 and r.counts["linearizable_keys"] == 1
    assert r.details[0].startswith("key 'b': NOT linearizable")


# ---- must pass ---------------------------------------------------------------------------------------

def test_overlapping_ops_linearizable_in_some_order():
    b = Builder()
    _w(b, 1, 1, 0, 5)
    _w(b, 2, 2, 1, 6)
    _r(b, 3, 2, 2, 3)     # w2 first, then this read
    _r(b, 3, 1, 4, 7)     # w1 after the first read, then this one
    _r(b, 4, None, 0, 0.5)  # initial state: absent
    r = _check(b.build())
    assert r.valid is True and r.counts["ok_ops"] == 5


def test_read_concurrent_with_a_write_may_see_either_value():
    for seen in (1, 2):
        b = Builder()
        _w(b, 1, 1, 0, 1)
        _w(b, 1, 2, 2, 5)
        _r(b, 2, seen, 3, 4)
        assert _check(b.build()).valid is True


def test_info_write_may_be_read_later_or_never():
    for seen in (1, 2):
        b = Builder()
        _w(b, 1, 1, 0, 1)
        _w(b, 1, 2, 2, None, type="info")   # connection lost: unknown outcome
        _r(b, 2, seen, 10, 11)
        assert _check(b.build()).valid is True


def test_unfinished_and_info_cas_may_apply():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    b.op(2, "cas", [1, 2], 2, None, type=None)   # history ended before the cas completed
    b.op(3, "cas", [7, 8], 2, 3, type="info")    # could never have matched: never happened
    _r(b, 4, 2, 5, 6)
    assert _check(b.build()).valid is True


def test_failed_reads_writes_and_cas_compare_failures_are_consistent():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    _w(b, 1, 9, 1.5, 1.8, type="fail")
    _r(b, 2, 4, 2, 3, type="info")
    b.op(2, "cas", [2, 3], 4, 5, type="fail")
    b.op(2, "cas", [1, 3], 6, 7)
    b.op(2, "delete", None, 8, 9)
    _r(b, 2, None, 10, 11)
    assert _check(b.build()).valid is True


def test_json_list_values_compare_as_values():
    b = Builder()
    _w(b, 1, [1, {"a": 2}], 0, 1)
    _r(b, 2, [1, {"a": 2}], 2, 3)
    assert _check(b.build()).valid is True


# ---- unknown -----------------------------------------------------------------------------------------

def test_exhausted_search_budget_is_unknown_not_pass():
    b = Builder()
    for p in range(6):
        _w(b, p, p, 0, 10)
    _r(b, 9, 5, 11, 12)
    r = _check(b.build(), max_steps=3)
    assert r.valid == UNKNOWN and any("budget exhausted" in d for d in r.details)


def test_too_few_ops_or_none_at_all_is_unknown():
    b = Builder()
    _w(b, 1, 1, 0, 1)
    assert _check(b.build(), min_ops=2).valid == UNKNOWN
    assert _check(Builder().op(1, "insert", 1, 0, 1).build(), min_ops=0).valid == UNKNOWN


# ---- properties --------------------------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 4)),
    st.tuples(st.just("read"), st.none()),
    st.tuples(st.just("cas"), st.tuples(st.integers(0, 4), st.integers(0, 4))),
), min_size=1, max_size=40)


def _sequential(ops, processes: int) -> Builder:
    """Run ``ops`` one after another on a real register, recording non-overlapping intervals."""
    b, state = Builder(), None
    for n, (f, arg) in enumerate(ops):
        p, t = n % processes, float(2 * n)
        if f == "write":
            state = arg
            _w(b, p, arg, t, t + 1)
        elif f == "read":
            _r(b, p, state, t, t + 1)
        else:
            swapped = state == arg[0]
            state = arg[1] if swapped else state
            b.op(p, "cas", list(arg), t, t + 1, type="ok" if swapped else "fail")
    return b


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 4))
def test_sequential_histories_of_a_real_register_are_linearizable(ops, processes):
    assert _check(_sequential(ops, processes).build()).valid is True


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 4), st.data())
def test_one_read_changed_to_a_value_never_written_is_not_linearizable(ops, processes, data):
    h = _sequential(ops, processes).build()
    reads = [op.index for op in h if op.f == "read" and op.type == "ok"]
    assume(reads)
    victim = data.draw(st.sampled_from(reads))
    rows = [{**op.to_dict(), "value": 999} if op.index == victim else op.to_dict() for op in h]
    r = _check(History.from_dicts(rows))
    assert r.valid is False and any("read -> 999" in d for d in r.details)


def _concurrent(seed: int, processes: int, per_process: int, domain: int | None = 4) -> History:
    """Concurrent clients on a real register: each op takes effect at a random instant of its interval
    (or, for a crashed client, maybe never); results come from applying ops in that order.
    Values are drawn from ``range(domain)``, or unique like the W4 workload's when ``domain`` is None."""
    rng = random.Random(seed)
    fresh = iter(range(10**9))

    def value() -> int:
        return rng.randrange(domain) if domain is not None else next(fresh)
    planned = []  # (effect time or None, process, f, arg, start, end, outcome)
    for p in range(processes):
        t = rng.random()
        for _ in range(per_process):
            start, end = t, t + rng.uniform(0.1, 3.0)
            f = rng.choice(("write", "read", "cas"))
            arg = value() if f == "write" else (rng.randrange(domain or 4), value())
            crashed = f != "read" and rng.random() < 0.1
            effect = None if crashed and rng.random() < 0.5 else rng.uniform(start, end)
            planned.append([effect, p, f, arg, start, end, "info" if crashed else "ok"])
            t = end + rng.uniform(0.0, 0.5)
    state, b = None, Builder()
    for op in sorted(planned, key=lambda o: (o[0] is None, o[0] or 0.0)):
        effect, p, f, arg, start, end, outcome = op
        if f == "read":
            _r(b, p, state, start, end)
        elif f == "write":
            state = arg if effect is not None else state
            _w(b, p, arg, start, end, type=outcome)
        else:
            swapped = effect is not None and state == arg[0]
            state = arg[1] if swapped else state
            b.op(p, "cas", list(arg), start, end,
                 type=outcome if outcome == "info" else ("ok" if swapped else "fail"))
    return b.build()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 12))
def test_concurrent_histories_of_a_real_register_are_linearizable(seed, processes, per_process):
    assert _check(_concurrent(seed, processes, per_process), min_ops=0).valid is True


def test_three_hundred_concurrent_ops_are_checked_within_budget():
    r = _check(_concurrent(7, 5, 60), max_seconds=30)
    assert r.valid is True and r.counts["ok_ops"] + r.counts["fail_ops"] + r.counts["info_ops"] == 300


# ---- the search against a brute-force oracle on small arbitrary histories ---------------------------

def _oracle(ops) -> bool:
    """Linearizable by exhaustive search: ops are (kind, outcome, arg, start, end); semantics written
    out independently of ``register.step``. info ops are optional; touching intervals are concurrent."""
    ops = [o for o in ops if not (o[1] != "ok" and o[0] == "read") and not (o[0] == "write" and o[1] == "fail")]

    def effect(state, op):
        kind, outcome, arg, *_ = op
        if kind == "read":
            return state == arg, state
        if kind == "write":
            return True, arg
        if outcome == "fail":
            return state != arg[0], state
        return state == arg[0], arg[1]

    def must_precede(a, b):  # a's return before b's call; info ops never return
        return a[1] != "info" and a[4] < b[3]

    def dfs(placed, state):
        remaining = [i for i in range(len(ops)) if i not in placed]
        if all(ops[i][1] == "info" for i in remaining):
            return True
        for i in remaining:
            if any(must_precede(ops[j], ops[i]) for j in remaining if j != i and ops[j][1] != "info"):
                continue
            allowed, new = effect(state, ops[i])
            if allowed and dfs(placed | {i}, new):
                return True
        return False

    return dfs(frozenset(), None)


SMALL_OPS = st.lists(st.tuples(
    st.sampled_from(["read", "write", "cas"]),
    st.sampled_from(["ok", "ok", "ok", "fail", "info"]),
    st.integers(0, 2), st.integers(0, 2),
    st.integers(0, 8), st.integers(0, 4),
), min_size=1, max_size=7)


@settings(max_examples=400, deadline=None)
@given(SMALL_OPS)
def test_search_agrees_with_brute_force_on_small_histories(raw):
    b, ops = Builder(), []
    for p, (kind, outcome, x, y, start, length) in enumerate(raw):
        arg = (x, y) if kind == "cas" else x
        end = float(start + length)
        if kind == "read":
            _r(b, p, x, start, end, type=outcome)
        else:
            b.op(p, kind, list(arg) if kind == "cas" else arg, start, end, type=outcome)
        ops.append((kind, outcome, arg, float(start), end))
    r = _check(b.build(), min_ops=0)
    assert r.counts["unknown_keys"] == 0
    assert (r.valid is not False) == _oracle(ops)


def test_a_cas_that_never_reached_the_store_observes_nothing():
    """Campaign cell register-s2: a cas refused at connect time (the node's agent was killed) was taken
    for a failed compare, so the checker 'saw' the register differ from its expected value right after
    a write of that value, and called a correct store non-linearizable."""
    b = Builder()
    _w(b, 1, 3, 0, 1)
    b.op(2, "cas", [3, 1], 2, 2.1, type="fail", error="not sent: ConnectionRefusedError: [Errno 111]")
    b.op(3, "read", None, 3, 4, result=3)
    assert _check(b.build()).valid is True
    b.op(4, "cas", [3, 4], 5, 6, type="fail", error="compare failed: value")  # a real one: register was 3
    assert _check(b.build()).valid is False
