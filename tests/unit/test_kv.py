"""The replicated state machine (raftpg/kv.py): apply as tables, the leader's lease clock, and a
hypothesis stateful test of replicas applying one log under leader changes and an injected clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftpg.clock import FakeClock
from raftpg.consensus.leases import LeaseClock
from raftpg.kv import (
    COMMAND_VERSION,
    KEY_BYTES_MAX,
    TTL_S_MAX,
    VALUE_BYTES_MAX,
    Committed,
    Conflict,
    Guard,
    KvState,
    Rejected,
    barrier_command,
    decode,
    delete_command,
    encode,
    expire_command,
    put_command,
    restore_command,
    touch_command,
)


def run(state: KvState, command: dict | bytes):
    """Apply through the codec, as a replica does: encode, decode, apply."""
    payload = command if isinstance(command, bytes) else encode(command)
    return state.apply(decode(payload))


def store(*commands: dict) -> KvState:
    state = KvState()
    for command in commands:
        assert isinstance(run(state, command), Committed), command
    return state


def visible(state: KvState) -> tuple:
    """Everything a reader can see, plus the counters."""
    return state.fingerprint()


# ------------------------------------------------------------------------------------------ basic ops


def test_put_creates_then_updates_with_revisions_per_key():
    state = KvState()
    first = run(state, put_command("a", "1"))
    assert isinstance(first, Committed) and first.revision == 1
    assert (first.kv.create_revision, first.kv.mod_revision, first.kv.version) == (1, 1, 1)
    run(state, put_command("b", "x"))
    second = run(state, put_command("a", "2"))
    assert second.revision == 3
    assert (second.kv.create_revision, second.kv.mod_revision, second.kv.version) == (1, 3, 2)
    assert state.get("a").value == "2" and state.get("b").mod_revision == 2
    assert state.revision == 3


def test_range_reads_a_prefix_in_key_order():
    state = store(put_command("/s/c/b", "2"), put_command("/s/c/a", "1"), put_command("/s/d", "3"),
                  put_command("/t", "4"))
    assert [kv.key for kv in state.range("/s/c/")] == ["/s/c/a", "/s/c/b"]
    assert [kv.key for kv in state.range("/s/")] == ["/s/c/a", "/s/c/b", "/s/d"]
    assert state.range("/nothing/") == []


def test_delete_bumps_revision_and_a_missing_key_is_a_no_op():
    state = store(put_command("a", "1"))
    result = run(state, delete_command("a"))
    assert isinstance(result, Committed) and result.revision == 2 and result.kv.value == "1"
    assert state.get("a") is None
    before = visible(state)
    again = run(state, delete_command("a"))
    assert isinstance(again, Committed) and again.revision == 2 and again.kv is None
    assert visible(state) == before
    recreated = run(state, put_command("a", "new"))
    assert (recreated.kv.create_revision, recreated.kv.version) == (3, 1)  # a new life starts over


def test_touch_refreshes_without_bumping_revision_or_version():
    state = store(put_command("lease", "me", ttl_s=10))
    before = state.get("lease")
    result = run(state, touch_command("lease"))
    assert isinstance(result, Committed) and result.revision == state.revision == 1
    after = state.get("lease")
    assert (after.value, after.mod_revision, after.version, after.ttl_s) == ("me", 1, 1, 10.0)
    assert after.refreshed > before.refreshed  # a new refresh identity
    assert state.changed_since("", 1) is False  # watchers are not woken by renewals


def test_touch_of_a_missing_key_fails_must_exist():
    state = KvState()
    result = run(state, touch_command("nope"))
    assert isinstance(result, Conflict) and result.guard == "must_exist" and result.current is None
    assert visible(state) == visible(KvState())


def test_barrier_changes_nothing_and_reports_the_revision():
    state = store(put_command("a", "1"))
    before = visible(state)
    result = run(state, barrier_command())
    assert result == Committed(1, None)
    assert visible(state) == before


def test_put_without_ttl_detaches_the_lease():
    state = store(put_command("k", "v", ttl_s=5), put_command("k", "w"))
    assert state.get("k").ttl_s is None


# ------------------------------------------------------------------------------------------ guards

GUARD_CASES = [
    # (description, guard, key exists with value "v" at mod_revision 1?, expected failed guard or None)
    ("must-not-exist holds", Guard(exists=False), False, None),
    ("must-not-exist fails", Guard(exists=False), True, "must_not_exist"),
    ("must-exist holds", Guard(exists=True), True, None),
    ("must-exist fails", Guard(exists=True), False, "must_exist"),
    ("mod revision holds", Guard(mod_revision=1), True, None),
    ("mod revision differs", Guard(mod_revision=7), True, "mod_revision"),
    ("mod revision of a missing key", Guard(mod_revision=1), False, "mod_revision"),
    ("value holds", Guard(value="v"), True, None),
    ("value differs", Guard(value="w"), True, "value"),
    ("value of a missing key", Guard(value="v"), False, "value"),
    ("all hold", Guard(exists=True, mod_revision=1, value="v"), True, None),
    ("exists holds, value fails", Guard(exists=True, value="w"), True, "value"),
]


def _with_key(exists: bool) -> KvState:
    return store(put_command("k", "v")) if exists else KvState()


@pytest.mark.parametrize("op", ["put", "delete", "touch"])
@pytest.mark.parametrize(("description", "guard", "exists", "failed"), GUARD_CASES,
                         ids=[c[0] for c in GUARD_CASES])
def test_every_guard_kind_succeeds_or_fails_naming_the_guard(op, description, guard, exists, failed):
    state = _with_key(exists)
    before = visible(state)
    command = {"put": lambda: put_command("k", "new", guard=guard),
               "delete": lambda: delete_command("k", guard=guard),
               "touch": lambda: touch_command("k", guard=guard)}[op]()
    result = run(state, command)
    if op == "touch" and failed is None and not exists:
        failed = "must_exist"  # a touch needs a key even when its guard holds
    if failed is None:
        assert isinstance(result, Committed), (description, result)
    else:
        assert isinstance(result, Conflict), (description, result)
        assert result.guard == failed
        assert result.current == state.get("k") and result.revision == state.revision
        assert visible(state) == before  # a failed guard changes nothing at all


def test_compare_and_set_on_value_is_exactly_one_winner():
    state = store(put_command("leader", "n1"))
    results = [run(state, put_command("leader", f"n{i}", guard=Guard(value="n1"))) for i in (2, 3)]
    assert isinstance(results[0], Committed) and isinstance(results[1], Conflict)
    assert results[1].current.value == "n2"


# ------------------------------------------------------------------------------------------ expiry


def test_expire_applies_only_to_the_refresh_it_timed():
    state = store(put_command("lease", "me", ttl_s=3))
    first = state.get("lease").refreshed
    run(state, touch_command("lease"))
    stale = run(state, expire_command("lease", first, 123.0))
    assert isinstance(stale, Conflict) and stale.guard == "refreshed"
    assert state.get("lease") is not None
    current = state.get("lease").refreshed
    result = run(state, expire_command("lease", current, 456.0))
    assert isinstance(result, Committed) and result.revision == 2
    assert state.get("lease") is None
    assert state.events[-1].kind == "expire"


def test_expire_ignores_keys_without_lease_and_missing_keys():
    state = store(put_command("plain", "v"))
    before = visible(state)
    assert isinstance(run(state, expire_command("plain", state.get("plain").refreshed, 1.0)), Conflict)
    assert isinstance(run(state, expire_command("ghost", 1, 1.0)), Conflict)
    assert visible(state) == before


# ------------------------------------------------------------------------------------------ bad input

LONG_KEY = "k" * (KEY_BYTES_MAX + 1)
LONG_VALUE = "v" * (VALUE_BYTES_MAX + 1)
MALFORMED = [
    ("not JSON", b"{nope"),
    ("not UTF-8", b"\xff\xfe"),
    ("JSON but not an object", b"[1, 2]"),
    ("absurdly nested", b"[" * 100_000 + b"]" * 100_000),
    ("no version", {"op": "put", "key": "k", "value": "v"}),
    ("wrong version", {"v": COMMAND_VERSION + 1, "op": "put", "key": "k", "value": "v"}),
    ("unknown op", {"v": COMMAND_VERSION, "op": "compact"}),
    ("op not a string", {"v": COMMAND_VERSION, "op": ["put"]}),
    ("empty key", put_command("", "v")),
    ("key not a string", {"v": COMMAND_VERSION, "op": "put", "key": 7, "value": "v"}),
    ("oversized key", put_command(LONG_KEY, "v")),
    ("oversized value", put_command("k", LONG_VALUE)),
    ("value not a string", {"v": COMMAND_VERSION, "op": "put", "key": "k", "value": {"a": 1}}),
    ("ttl zero", put_command("k", "v", ttl_s=0)),
    ("ttl negative", put_command("k", "v", ttl_s=-1)),
    ("ttl too long", put_command("k", "v", ttl_s=TTL_S_MAX + 1)),
    ("ttl not a number", {"v": COMMAND_VERSION, "op": "put", "key": "k", "value": "v", "ttl_s": "5"}),
    ("ttl a boolean", {"v": COMMAND_VERSION, "op": "put", "key": "k", "value": "v", "ttl_s": True}),
    ("ttl NaN", b'{"v":1,"op":"put","key":"k","value":"v","ttl_s":NaN}'),
    ("ttl infinite", b'{"v":1,"op":"put","key":"k","value":"v","ttl_s":Infinity}'),
    ("guard not an object", {"v": COMMAND_VERSION, "op": "put", "key": "k", "value": "v", "guard": 1}),
    ("guard unknown field", {"v": COMMAND_VERSION, "op": "delete", "key": "k", "guard": {"lease": 1}}),
    ("guard exists not bool", {"v": COMMAND_VERSION, "op": "delete", "key": "k", "guard": {"exists": 1}}),
    ("guard revision a string", {"v": COMMAND_VERSION, "op": "delete", "key": "k",
                                 "guard": {"mod_revision": "3"}}),
    ("touch key not a string", {"v": COMMAND_VERSION, "op": "touch", "key": None}),
    ("delete key not a string", {"v": COMMAND_VERSION, "op": "delete", "key": ["k"]}),
    ("expire without refreshed", {"v": COMMAND_VERSION, "op": "expire", "key": "k"}),
    ("restore of garbage", restore_command({"v": 1, "revision": "x", "applied": 0, "keys": []})),
    ("restore with an oversized value", restore_command(
        {"v": 1, "revision": 5, "applied": 5, "keys": [["k", LONG_VALUE, 1, 1, 1, None, 1]]})),
]


@pytest.mark.parametrize(("description", "command"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_commands_are_rejected_and_change_nothing(description, command):
    state = store(put_command("k", "v", ttl_s=5))
    before = visible(state)
    result = run(state, command)
    assert isinstance(result, Rejected), (description, result)
    assert result.reason
    assert visible(state) == before


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.sampled_from(["v", "op", "key", "value", "guard", "ttl_s",
                                                       "refreshed", "exists", "mod_revision"]),
                                      children, max_size=5),
                    max_leaves=12),
       st.sampled_from(["put", "touch", "delete", "expire", "barrier", "restore", "x"]))
def test_any_json_is_answered_never_raised(body, op):
    """Whatever reaches the log, apply answers (an exception would wedge Raft's apply thread)."""
    state = store(put_command("k", "v", ttl_s=5))
    command = {**body, "v": 1, "op": op} if isinstance(body, dict) else body
    before_revision = state.revision
    result = state.apply(decode(json.dumps(command).encode()))
    assert isinstance(result, Committed | Conflict | Rejected)
    assert state.revision >= before_revision
    if not isinstance(result, Committed):
        assert state.get("k") is not None and state.get("k").value == "v"


# ------------------------------------------------------------------------------------------ snapshots


def test_snapshot_round_trip_is_the_same_state_and_behaves_the_same():
    state = store(put_command("a", "1"), put_command("b", "2", ttl_s=7.5), delete_command("a"),
                  put_command("c/x", "3"), touch_command("b"))
    snapshot = json.loads(json.dumps(state.to_snapshot()))  # it survives JSON (and pickle) as plain data
    copy = KvState.from_snapshot(snapshot)
    assert copy.fingerprint() == state.fingerprint()
    for replica in (state, copy):
        run(replica, put_command("b", "9", guard=Guard(mod_revision=2)))
        run(replica, expire_command("b", replica.get("b").refreshed, 1.0))
    assert copy.fingerprint() == state.fingerprint()
    assert copy.changed_since("", 0) is None  # history before the snapshot is gone: re-read


@pytest.mark.parametrize("broken", [
    {"v": 2, "revision": 1, "applied": 1, "keys": []},
    {"v": 1, "revision": -1, "applied": 1, "keys": []},
    {"v": 1, "revision": 1, "applied": 1, "keys": [["k", "v", 1, 5, 1, None, 1]]},  # newer than the store
    {"v": 1, "revision": 1, "applied": 1, "keys": [["k", "v", 1, 1]]},
    {"v": 1, "revision": 1, "applied": 1, "keys": "nope"},
    "not a dict",
])
def test_a_broken_snapshot_is_refused(broken):
    with pytest.raises(ValueError):
        KvState.from_snapshot(broken)


def test_restore_seeds_an_empty_store_only_and_keeps_refreshes_unique():
    source = store(put_command("a", "1", ttl_s=5), put_command("b", "2"), touch_command("a"))
    seeded = KvState()
    result = run(seeded, restore_command(source.to_snapshot()))
    assert isinstance(result, Committed) and result.revision == source.revision + 1
    assert [(kv.key, kv.value) for kv in seeded.range("")] == [("a", "1"), ("b", "2")]
    old_refresh = seeded.get("a").refreshed
    run(seeded, touch_command("a"))
    assert seeded.get("a").refreshed > old_refresh  # never reuses a refresh identity from the seed
    before = visible(seeded)
    again = run(seeded, restore_command(KvState().to_snapshot()))
    assert isinstance(again, Rejected) and visible(seeded) == before  # never clobbers data


# ------------------------------------------------------------------------------------------ lease clock


def test_lease_countdown_starts_when_the_leader_first_sees_the_refresh():
    clock, leases = FakeClock(), LeaseClock()
    state = store(put_command("l", "me", ttl_s=3))
    clock.advance(100)  # the put happened long ago, but this leader only sees it now
    assert leases.due(state, clock.monotonic()) == []
    clock.advance(2.9)
    assert leases.due(state, clock.monotonic()) == []  # no early expiry
    clock.advance(0.1)
    [command] = leases.due(state, clock.monotonic())
    assert command["op"] == "expire" and command["key"] == "l"
    assert command["refreshed"] == state.get("l").refreshed
    assert command["leader_monotonic"] == clock.monotonic()


def test_a_refresh_restarts_the_countdown():
    clock, leases = FakeClock(), LeaseClock()
    state = store(put_command("l", "me", ttl_s=3))
    leases.due(state, clock.monotonic())
    clock.advance(2.5)
    run(state, touch_command("l"))
    leases.observe(state, clock.monotonic())
    clock.advance(2.5)  # 5 s after the put, 2.5 s after the refresh
    assert leases.due(state, clock.monotonic()) == []
    clock.advance(0.5)
    assert [c["key"] for c in leases.due(state, clock.monotonic())] == ["l"]


def test_a_leader_change_restarts_every_countdown():
    clock, leases = FakeClock(), LeaseClock()
    state = store(put_command("l", "me", ttl_s=3), put_command("m", "you", ttl_s=10))
    leases.due(state, clock.monotonic())
    clock.advance(2.9)
    leases.reset()  # a new Raft leader (here: the same object, as RaftNode does on a term change)
    clock.advance(0.2)
    assert leases.due(state, clock.monotonic()) == []  # 3.1 s since the put, 0.2 s since the election
    clock.advance(2.8)
    assert leases.due(state, clock.monotonic()) == []
    clock.advance(0.2)
    assert [c["key"] for c in leases.due(state, clock.monotonic())] == ["l"]


def test_an_expiry_is_proposed_again_only_after_a_pause():
    clock, leases = FakeClock(), LeaseClock()
    state = store(put_command("l", "me", ttl_s=1))
    leases.due(state, clock.monotonic())
    clock.advance(1)
    assert len(leases.due(state, clock.monotonic())) == 1
    clock.advance(0.5)
    assert leases.due(state, clock.monotonic(), repropose_after_s=1.0) == []  # still in flight
    clock.advance(0.5)
    assert len(leases.due(state, clock.monotonic(), repropose_after_s=1.0)) == 1  # lost? propose again


def test_an_expiry_of_an_old_refresh_cannot_kill_a_renewed_lease():
    """The leader proposes expiry from its view; a renewal already in the log before it wins."""
    clock, leases = FakeClock(), LeaseClock()
    leader_view = store(put_command("l", "me", ttl_s=1))
    log = [touch_command("l")]  # committed, not yet applied on the leader
    leases.due(leader_view, clock.monotonic())
    clock.advance(1)
    log += leases.due(leader_view, clock.monotonic())
    follower = store(put_command("l", "me", ttl_s=1))
    results = [run(follower, c) for c in log]
    assert isinstance(results[1], Conflict) and follower.get("l") is not None


# ------------------------------------------------------------------------------------------ stateful

KEYS = ["/s/leader", "/s/members/a", "/s/members/b", "/t/x"]
VALUES = ["a", "b", "c"]
TTLS = [None, 1.0, 1.0, 2.5, 6.0]


class Replicas(RuleBasedStateMachine):
    """Three replicas apply one committed log at their own pace. One is the Raft leader: it proposes
    client commands and, from its own LeaseClock on its own monotonic clock, lease expiries. Clocks
    share a rate but not an origin; leadership moves around. The model keeps the true time at which
    each refresh committed, to check that no lease is expired before its TTL."""

    def __init__(self) -> None:
        super().__init__()
        self.true_now = 0.0
        self.offsets = [1000.0, -5.0, 123456.0]  # each replica's monotonic clock = true time + offset
        self.replicas = [KvState() for _ in range(3)]
        self.positions = [0, 0, 0]  # log entries applied by each replica
        self.log: list[dict] = []
        self.fingerprint_at: dict[int, tuple] = {0: KvState().fingerprint()}
        self.leader = 0
        self.leader_since = 0.0
        self.leases = LeaseClock()
        self.committed_at: dict[tuple[str, int], float] = {}  # (key, refreshed) -> true commit time
        # The committed state: applies each command as it is appended, to learn refresh identities and
        # to aim guards at current values. A model of "committed now", not one of the replicas.
        self.reference = KvState()

    def mono(self, replica: int) -> float:
        return self.true_now + self.offsets[replica]

    # -- the log: a command is committed when appended; replicas apply it later
    def append(self, command: dict) -> None:
        self.log.append(command)
        before = self.reference.get(command["key"]) if "key" in command else None
        result = self.reference.apply(decode(encode(command)))
        if isinstance(result, Committed) and result.kv is not None and command["op"] in ("put", "touch"):
            self.committed_at[(result.kv.key, result.kv.refreshed)] = self.true_now
        if command["op"] == "expire" and isinstance(result, Conflict):
            event("an expiry of an older refresh was refused")
        if command["op"] == "expire" and isinstance(result, Committed):
            # what actually died had gone unrefreshed for its whole TTL (a renewal always wins)
            assert before is not None and before.ttl_s is not None
            assert self.true_now - self.committed_at[(before.key, before.refreshed)] >= before.ttl_s - 1e-9

    def apply_next(self, i: int) -> None:
        state = self.replicas[i]
        command = self.log[self.positions[i]]
        revision_before = state.revision
        result = state.apply(decode(encode(command)))
        assert state.revision >= revision_before  # revisions never go backwards
        self.positions[i] += 1
        if isinstance(result, Committed) and state.revision > revision_before:
            assert state.changed_since(command["key"], revision_before) in (True, None)  # watch sees it
            assert state.changed_since("/nowhere/", revision_before) in (False, None)
        else:
            assert state.changed_since("", revision_before) in (False, None)
        expected = self.fingerprint_at.setdefault(self.positions[i], state.fingerprint())
        assert state.fingerprint() == expected, "replicas diverged at the same log position"

    # -- rules
    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), ttl=st.sampled_from(TTLS),
          guard=st.sampled_from(["none", "none", "absent", "present", "value", "current_rev", "stale_rev"]))
    def put(self, key, value, ttl, guard):
        current = self.reference.get(key)
        self.append(put_command(key, value, guard=self._guard(guard, current), ttl_s=ttl))

    @rule(key=st.sampled_from(KEYS), guard=st.sampled_from(["none", "value", "current_rev", "absent"]))
    def touch(self, key, guard):
        self.append(touch_command(key, guard=self._guard(guard, self.reference.get(key))))

    @precondition(lambda self: any(kv.ttl_s for kv in self.reference.range("")))
    @rule(data=st.data())
    def holder_renews(self, data):
        leased = [kv.key for kv in self.reference.range("") if kv.ttl_s]
        self.append(touch_command(data.draw(st.sampled_from(leased)), guard=None))

    @precondition(lambda self: any(kv.ttl_s for kv in self.replicas[self.leader].range("")))
    @rule(data=st.data())
    def renewal_races_an_expiry(self, data):
        """The holder renews as the leader's countdown runs out: the renewal is committed but not yet
        applied on the leader when it proposes expiry of the refresh it timed. The renewal must win."""
        view = self.replicas[self.leader]
        kv = view.get(data.draw(st.sampled_from([kv.key for kv in view.range("") if kv.ttl_s])))
        self._propose_expiries()  # the countdown of the refresh the leader sees has started
        self.true_now += kv.ttl_s
        if self.reference.get(kv.key) is not None:
            self.append(touch_command(kv.key))
        self._propose_expiries()

    @rule(key=st.sampled_from(KEYS), guard=st.sampled_from(["none", "present", "value", "stale_rev"]))
    def delete(self, key, guard):
        self.append(delete_command(key, guard=self._guard(guard, self.reference.get(key))))

    @rule()
    def barrier(self):
        self.append(barrier_command())

    @rule(replica=st.integers(0, 2), count=st.integers(1, 8))
    def catch_up(self, replica, count):
        for _ in range(min(count, len(self.log) - self.positions[replica])):
            self.apply_next(replica)

    @rule(dt=st.floats(0.0, 4.0, allow_nan=False))
    def time_passes(self, dt):
        self.true_now += dt

    @rule(applied_first=st.integers(0, 8))
    def leader_tick(self, applied_first):
        """The leader applies some of what is committed, then proposes expiries from its own clock."""
        for _ in range(min(applied_first, len(self.log) - self.positions[self.leader])):
            self.apply_next(self.leader)
        self._propose_expiries()

    @rule(steps=st.integers(1, 6), dt=st.floats(0.05, 1.5, allow_nan=False))
    def leader_runs_a_while(self, steps, dt):
        """Ticks of a leader that keeps up with the log while time passes (where expiries happen)."""
        for _ in range(steps):
            while self.positions[self.leader] < len(self.log):
                self.apply_next(self.leader)
            self._propose_expiries()
            self.true_now += dt

    def _propose_expiries(self):
        view = self.replicas[self.leader]
        for command in self.leases.due(view, self.mono(self.leader)):
            kv = view.get(command["key"])
            committed = self.committed_at[(kv.key, kv.refreshed)]
            timed_from = max(committed, self.leader_since)
            # the invariant of safety rule 3, on true time: TTL elapsed since the refresh committed and
            # since this leader took over
            assert self.true_now - timed_from >= kv.ttl_s - 1e-9, (command, self.true_now, timed_from)
            event("leader proposed an expiry")
            self.append(command)

    @rule(new_leader=st.integers(0, 2))
    def leader_changes(self, new_leader):
        self.leader = new_leader
        self.leader_since = self.true_now
        self.leases = LeaseClock()  # a new leader starts every countdown afresh (not replicated)

    @rule(replica=st.integers(0, 2))
    def restart_from_snapshot(self, replica):
        state = self.replicas[replica]
        self.replicas[replica] = KvState.from_snapshot(json.loads(json.dumps(state.to_snapshot())))
        assert self.replicas[replica].fingerprint() == state.fingerprint()

    @precondition(lambda self: len(self.log) > 0)
    @rule()
    def everyone_catches_up(self):
        for i in range(3):
            while self.positions[i] < len(self.log):
                self.apply_next(i)
        assert len({r.fingerprint() for r in self.replicas}) == 1
        assert self.replicas[0].fingerprint() == self.reference.fingerprint()

    @invariant()
    def same_position_same_state(self):
        for i, state in enumerate(self.replicas):
            assert state.fingerprint() == self.fingerprint_at[self.positions[i]]

    def _guard(self, kind, current):
        if kind == "none":
            return None
        if kind == "absent":
            return Guard(exists=False)
        if kind == "present":
            return Guard(exists=True)
        if kind == "value":
            return Guard(value=current.value if current else "a")
        if kind == "current_rev":
            return Guard(mod_revision=current.mod_revision if current else 1)
        return Guard(mod_revision=(current.mod_revision - 1) if current else 99)


TestReplicas = Replicas.TestCase
TestReplicas.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from([1.0, 2.0]),
                          st.floats(0.0, 3.0, allow_nan=False)), min_size=1, max_size=15))
def test_leases_expire_eventually_when_no_one_renews(puts):
    """Liveness: a lease nobody renews is expired by a leader that keeps ticking."""
    clock, leases, state = FakeClock(), LeaseClock(), KvState()
    for key, ttl, gap in puts:
        run(state, put_command(key, "v", ttl_s=ttl))
        leases.observe(state, clock.monotonic())
        clock.advance(gap)
    for _ in range(10):
        for command in leases.due(state, clock.monotonic()):
            run(state, command)
        clock.advance(1.0)
    assert state.range("") == []
