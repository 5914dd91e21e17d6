"""plan_sync: which standbys are synchronous, and the order in which the sync key and
synchronous_standby_names change (safety rule 5: the key never names a standby PostgreSQL does not treat
as synchronous, so failover never promotes an unsynchronised node)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from raftpg.ha.actions import SetSynchronousStandbys, WriteSyncKey
from raftpg.ha.sync import plan_sync, standby_names_value
from raftpg.model import (
    ClusterView,
    DataDir,
    DynamicConfig,
    LocalState,
    Member,
    ReplicationRow,
    SyncState,
    Tags,
)
from raftpg.testing.fake_postgres import parse_standby_names

ME = "n1"


def config(**overrides: object) -> DynamicConfig:
    return DynamicConfig.from_dict({"synchronous_mode": True, **overrides})


def members(*names: str, **special: Member) -> tuple[Member, ...]:
    return (Member(ME, role="primary", state="running"),) + tuple(
        special.get(n, Member(n, role="replica", state="streaming")) for n in names)


def view(*, cfg: DynamicConfig | None = None, key: tuple[str, ...] | None = None, key_leader: str = ME,
         all_members: tuple[Member, ...] | None = None) -> ClusterView:
    return ClusterView(initialize="7", config=cfg or config(), members=all_members or members("n2", "n3"),
                       sync=None if key is None else SyncState(key_leader, key, 40))


def row(name: str, sync_state: str = "async", flush: int = 1000, state: str = "streaming") -> ReplicationRow:
    return ReplicationRow(name, name, state, sync_state, flush, flush, flush)


def primary(*rows: ReplicationRow, ssn: str = "") -> LocalState:
    return LocalState(data_dir=DataDir.INITIALIZED, sysid="7", running=True, in_recovery=False,
                      replication=rows, synchronous_standby_names=ssn)


FIRST_N2 = standby_names_value(("n2",), 1, False)


# ------------------------------------------------------------------------------------- the order of changes


def test_a_new_standby_goes_to_postgresql_first_and_not_to_the_key() -> None:
    actions, _ = plan_sync(view(key=()), primary(row("n2"), row("n3", flush=900)), ME)
    assert actions == (SetSynchronousStandbys(FIRST_N2),)


def test_the_key_names_a_standby_only_once_postgresql_reports_it_synchronous() -> None:
    still_async = primary(row("n2", "async"), ssn=FIRST_N2)  # reloaded, not yet confirmed
    assert not any(isinstance(a, WriteSyncKey) and a.standbys for a in plan_sync(view(), still_async, ME)[0])
    confirmed = primary(row("n2", "sync"), ssn=FIRST_N2)
    assert plan_sync(view(key=()), confirmed, ME, safe_lsn=1000)[0] == (WriteSyncKey(("n2",), 40),)


def test_a_confirmed_standby_joins_the_key_only_once_it_flushed_past_the_safe_position() -> None:
    """PostgreSQL reports ``sync`` once the standby streams (everything *sent*); commits another standby
    acknowledged under the old setting may not be *flushed* there yet: wait until its flush position
    passes the primary's position observed under the new setting (regression: joined at once)."""
    confirmed = primary(row("n2", "sync", flush=1000), ssn=FIRST_N2)
    assert plan_sync(view(key=()), confirmed, ME, safe_lsn=1001)[0] == ()
    assert plan_sync(view(key=()), confirmed, ME, safe_lsn=None)[0] == ()  # not observed yet
    assert plan_sync(view(key=()), confirmed, ME, safe_lsn=1000)[0] == (WriteSyncKey(("n2",), 40),)


def test_a_standby_that_left_is_removed_from_the_key_before_postgresql_names_another() -> None:
    actions, _ = plan_sync(view(key=("n2",)), primary(row("n3", "async"), ssn=FIRST_N2), ME)
    assert actions == (WriteSyncKey((), 40), SetSynchronousStandbys(standby_names_value(("n3",), 1, False)))


def test_a_steady_state_plans_nothing() -> None:
    assert plan_sync(view(key=("n2",)), primary(row("n2", "sync"), row("n3", "potential"), ssn=FIRST_N2), ME)[0] == ()


def test_an_absent_key_is_written_naming_me_before_postgresql_waits_for_anyone() -> None:
    actions, _ = plan_sync(view(), primary(row("n2")), ME)
    assert actions == (WriteSyncKey((), None), SetSynchronousStandbys(FIRST_N2))


def test_a_key_left_by_the_previous_primary_is_taken_over_before_anything_else() -> None:
    actions, _ = plan_sync(view(key=("n1",), key_leader="n3"), primary(row("n2"), ssn=""), ME)
    assert actions[0] == WriteSyncKey((), 40)


def test_a_confirmed_standby_is_kept_when_another_streams_slightly_ahead() -> None:
    """Regression: standbys were ranked by flush position alone, so a standby a few bytes ahead took
    the place of the confirmed one every other cycle, emptying the key (no failover candidate) meanwhile."""
    local = primary(row("n2", "sync", flush=1000), row("n3", "potential", flush=1001), ssn=FIRST_N2)
    assert plan_sync(view(key=("n2",)), local, ME)[0] == ()


# ------------------------------------------------------------------------------------- no standby


def test_strict_mode_without_a_standby_makes_commits_wait() -> None:
    actions, _ = plan_sync(view(cfg=config(synchronous_mode_strict=True), key=()), primary(), ME)
    assert actions == (SetSynchronousStandbys("*"),)


def test_non_strict_mode_without_a_standby_runs_asynchronously() -> None:
    actions, _ = plan_sync(view(key=("n2",)), primary(ssn=FIRST_N2), ME)
    assert actions == (WriteSyncKey((), 40), SetSynchronousStandbys(""))


def test_asynchronous_mode_clears_both() -> None:
    actions, _ = plan_sync(view(cfg=config(synchronous_mode=False), key=("n2",)),
                           primary(row("n2", "sync"), ssn=FIRST_N2), ME)
    assert actions == (WriteSyncKey((), 40), SetSynchronousStandbys(""))


# ------------------------------------------------------------------------------------- who may be named


def test_nosync_witness_and_unreadable_members_are_never_named() -> None:
    special = {"n2": Member("n2", state="streaming", tags=Tags(nosync=True)),
               "n3": Member("n3", state="running", witness=True),
               "n4": Member("n4", valid=False)}
    cluster = view(all_members=members("n2", "n3", "n4", **special), key=())
    rows = tuple(row(n, "sync") for n in ("n2", "n3", "n4", "stranger"))
    assert plan_sync(cluster, primary(*rows), ME)[0] == ()
    # a standby tagged nosync after it was named is taken out: key first, then PostgreSQL
    actions, _ = plan_sync(replace(cluster, sync=SyncState(ME, ("n2",), 40)), primary(*rows, ssn=FIRST_N2), ME)
    assert actions == (WriteSyncKey((), 40), SetSynchronousStandbys(""))


def test_only_streaming_standbys_are_named_and_the_count_is_honoured() -> None:
    rows = (row("n2", flush=5), row("n3", flush=9), row("n4", flush=7), row("n5", state="catchup"))
    actions, _ = plan_sync(view(cfg=config(synchronous_node_count=2), key=(),
                                all_members=members("n2", "n3", "n4", "n5")), primary(*rows), ME)
    assert actions == (SetSynchronousStandbys(standby_names_value(("n3", "n4"), 2, False)),)


# ------------------------------------------------------------------------------------- the prefix property


@dataclass(frozen=True)
class Standby:
    name: str
    streaming: bool
    flush: int
    nosync: bool = False


def pg_sync(ssn: str, standbys: tuple[Standby, ...]) -> set[str]:
    """What PostgreSQL treats as synchronous for ``synchronous_standby_names``, as FakePostgres does."""
    count, listed = parse_standby_names(ssn)
    streaming = sorted(s.name for s in standbys if s.streaming)
    order = streaming if listed is None else [n for n in listed if n in streaming]
    return set(order[:count])


def rows_for(ssn: str, standbys: tuple[Standby, ...]) -> tuple[ReplicationRow, ...]:
    count, listed = parse_standby_names(ssn)
    sync = pg_sync(ssn, standbys)
    named = set(listed) if listed is not None else {s.name for s in standbys}
    return tuple(row(s.name, "sync" if s.name in sync else "potential" if s.name in named else "async",
                     flush=s.flush) for s in standbys if s.streaming)


@st.composite
def situations(draw: st.DrawFn) -> tuple[DynamicConfig, tuple[Standby, ...], tuple[str, ...], str]:
    names = draw(st.lists(st.sampled_from(["n2", "n3", "n4", "n5"]), unique=True, max_size=4))
    standbys = tuple(Standby(n, draw(st.booleans()), draw(st.integers(0, 3)), draw(st.booleans()))
                     for n in sorted(names))
    cfg = config(synchronous_node_count=draw(st.integers(1, 3)), synchronous_mode_strict=draw(st.booleans()))
    listed = draw(st.lists(st.sampled_from(["n2", "n3", "n4", "n5"]), unique=True, max_size=3))
    ssn = draw(st.sampled_from(["", "*", standby_names_value(tuple(listed), draw(st.integers(1, 3)), False)]))
    key = tuple(sorted(draw(st.sets(st.sampled_from(sorted(pg_sync(ssn, standbys)) or ["n2"])))))
    key = tuple(n for n in key if n in pg_sync(ssn, standbys))  # a consistent start: rule 5 holds
    if draw(st.booleans()):
        return cfg, standbys, None, ""  # synchronous mode just turned on: no key, nothing synchronous
    return cfg, standbys, key, ssn


@settings(max_examples=400, deadline=None)
@given(situations(), st.lists(st.integers(1, 4), min_size=8, max_size=8))
def test_any_prefix_of_the_plan_keeps_the_key_synchronous_and_replanning_converges(
        situation: tuple[DynamicConfig, tuple[Standby, ...], tuple[str, ...] | None, str], prefixes: list[int]) -> None:
    cfg, standbys, key, ssn = situation
    cluster = ClusterView(initialize="7", config=cfg, members=(Member(ME, role="primary", state="running"),) + tuple(
        Member(s.name, state="streaming" if s.streaming else "running", tags=Tags(nosync=s.nosync))
        for s in standbys), sync=None if key is None else SyncState(ME, key, 1))
    strict = cfg.synchronous_mode_strict
    # Strict mode may keep a standby that stopped being synchronous (it may hold commits nobody else has)
    # until its replacements caught up; the loop remembers a position for that, here 0: caught up at once.
    held_ok = set(key or ()) if strict else set()
    for prefix in prefixes:
        local = primary(*rows_for(ssn, standbys), ssn=ssn)
        actions, _ = plan_sync(cluster, local, ME, catchup_lsn=0, safe_lsn=0)
        if not actions:
            break
        for action in actions[:prefix]:  # the executor stopped after ``prefix`` actions
            if isinstance(action, WriteSyncKey):
                assert set(action.standbys) <= pg_sync(ssn, standbys) | held_ok, \
                    "the key names an unsynchronised standby"
                revision = cluster.sync.revision if cluster.sync else 0
                cluster = replace(cluster, sync=SyncState(ME, action.standbys, revision + 1))
            else:
                assert isinstance(action, SetSynchronousStandbys)
                # an absent key restricts no failover: PostgreSQL must not wait for a standby before it exists
                assert cluster.sync is not None or not pg_sync(action.value, standbys), "ssn set before the key"
                ssn = action.value
            assert cluster.sync is not None
            assert set(cluster.sync.sync_standby) <= pg_sync(ssn, standbys) | held_ok, \
                f"after {action}: key {cluster.sync.sync_standby} but PostgreSQL syncs {pg_sync(ssn, standbys)}"
    else:
        raise AssertionError("plan_sync did not converge within 8 rounds")
    # converged: the key holds exactly the chosen standbys PostgreSQL confirms, and nobody excluded
    assert cluster.sync is not None
    eligible = {s.name for s in standbys if s.streaming and not s.nosync}
    if strict and not eligible:  # nobody replaces the old standbys: they stay, they hold every commit
        assert set(cluster.sync.sync_standby) == set(key or ())
    else:
        assert set(cluster.sync.sync_standby) <= eligible
        assert len(cluster.sync.sync_standby) == min(cfg.synchronous_node_count, len(eligible))
    if not eligible:
        assert ssn == ("*" if cfg.synchronous_mode_strict else "")


# ------------------------------------------------------------------------------------- strict: keep the witnesses


STRICT = config(synchronous_mode_strict=True)
FIRST_N3 = standby_names_value(("n3",), 1, True)


def test_strict_keeps_a_lost_standby_with_no_replacement() -> None:
    """n2 stopped streaming; every commit since waited for it: it holds every acknowledged commit."""
    actions, state = plan_sync(view(cfg=STRICT, key=("n2",)), primary(ssn=standby_names_value(("n2",), 1, True)), ME,
                               catchup_lsn=5000)
    assert not any(isinstance(a, WriteSyncKey) for a in actions), actions
    assert SetSynchronousStandbys("*") in actions  # commits wait for any standby meanwhile
    assert "keeping n2" in state


def test_strict_keeps_a_lost_standby_until_its_replacement_caught_up() -> None:
    local = primary(row("n3", "sync", flush=4000), ssn=FIRST_N3)
    actions, _ = plan_sync(view(cfg=STRICT, key=("n2",)), local, ME, catchup_lsn=5000, safe_lsn=4000)
    assert actions == (WriteSyncKey(("n2", "n3"), 40),)  # n3 joins; n2 stays until n3 flushed past 5000
    actions, _ = plan_sync(view(cfg=STRICT, key=("n2", "n3")), local, ME, catchup_lsn=5000)
    assert actions == ()
    caught_up = primary(row("n3", "sync", flush=5000), ssn=FIRST_N3)
    actions, _ = plan_sync(view(cfg=STRICT, key=("n2", "n3")), caught_up, ME, catchup_lsn=5000)
    assert actions == (WriteSyncKey(("n3",), 40),)


def test_strict_without_a_remembered_position_keeps_the_lost_standby() -> None:
    local = primary(row("n3", "sync", flush=9000), ssn=FIRST_N3)
    actions, _ = plan_sync(view(cfg=STRICT, key=("n2", "n3")), local, ME, catchup_lsn=None)
    assert actions == ()


def test_non_strict_drops_a_lost_standby_at_once() -> None:
    actions, _ = plan_sync(view(key=("n2",)), primary(ssn=FIRST_N2), ME, catchup_lsn=5000)
    assert actions[0] == WriteSyncKey((), 40)
