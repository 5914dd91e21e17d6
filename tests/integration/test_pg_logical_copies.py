"""A replica's copies of a permanent logical slot (raftpg.pg.logical_slots) on two real PostgreSQL 15
servers, no agents: copied from the primary (one restart), advanced in small steps to the published
position, replaced when ahead of it, left alone within the copy backoff, and dropped once the slot is no
longer wanted. The full failover with a consumer is tests/integration/test_logical_slots.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_pg import BIN_DIR, pg_tmp, poll, settings_for

from raftpg.model import PermanentSlot
from raftpg.model.lsn import parse_lsn
from raftpg.pg import Credentials, PgSettings, Postgres, conninfo_for, logical_slots

pytestmark = pytest.mark.integration
pg_dir = pg_tmp  # test_pg's fixture (kills any postmaster left in the directory), known here as pg_dir

CDC = PermanentSlot("cdc", "postgres", "test_decoding")


def copy_at(pg: Postgres) -> int | None:
    rows = pg.query("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc'")
    return parse_lsn(rows[0][0]) if rows and rows[0][0] else None


def published(pg: Postgres) -> int:
    return dict(pg.observe().slots)["cdc"]  # what the primary publishes for it: its confirmed_flush_lsn


def pair(pg_dir: Path) -> tuple[PgSettings, PgSettings, str]:
    """A primary n1 (with a table t) and a replica n2, wal_level logical, with a rewind role; the source
    conninfo n2 copies from."""
    auth = dict(superuser=Credentials("postgres", "su-secret"), replication=Credentials("replicator", "repl"),
                rewind=Credentials("rewinder", "rw-secret"))
    psql = os.path.join(BIN_DIR, "psql")
    logical = {"fsync": "off", "wal_level": "logical"}
    s1 = settings_for(pg_dir, "n1", parameters=logical, **auth,
                      post_bootstrap=f"{psql} -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (v int)'")
    s2 = settings_for(pg_dir, "n2", parameters=logical, **auth)
    return s1, s2, conninfo_for("127.0.0.1", s1.port, "replicator")


def test_a_replica_copies_advances_replaces_and_drops_a_logical_slot(run_as_postgres, pg_dir: Path) -> None:
    s1, s2, source = pair(pg_dir)

    def replayed(n2: Postgres, lsn: int) -> None:
        poll(lambda: (n2.observe().replay_lsn or 0) >= lsn, what="n2 replayed up to the published position")

    def body() -> None:
        n1, n2 = Postgres(s1), Postgres(s2)
        try:
            n1.bootstrap(timeout_s=60)
            assert n1.ensure_slots({"n2"}) == ({"n2"}, set())
            n2.clone(source)
            assert n2.start(source, "n2", timeout_s=30)
            assert n1.ensure_logical_slots((CDC,)) == ({"cdc"}, set())
            first = published(n1)
            replayed(n2, first)

            # missing here: copied from the primary (PostgreSQL restarts to load it), at its position
            assert n2.follow_logical_slots(((CDC, first),), source) == {"cdc"}
            assert copy_at(n2) == first and n2.observe().in_recovery
            assert n2.follow_logical_slots(((CDC, first),), source) == set(), "in step: nothing to do"

            # the consumer confirms more on the primary: the copy follows, in 64-byte steps here
            n1.query("INSERT INTO t SELECT generate_series(1, 200)")
            assert n1.query("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")[0][0] > 200
            moved = published(n1)
            assert moved > first
            replayed(n2, moved)
            logical_slots.ADVANCE_STEP = 64
            assert n2.follow_logical_slots(((CDC, moved),), source) == set(), "advanced, not copied"
            assert copy_at(n2) == moved

            # a copy ahead of what the primary publishes (left by another history) is copied again, but
            # not twice within the backoff (each copy restarts PostgreSQL). The copy is the state file on
            # the primary's disk, written at a checkpoint: behind the slot in memory until then (safe:
            # behind means sent again, never skipped)
            n1.query("CHECKPOINT")
            logical_slots._copied_at.clear()
            assert n2.follow_logical_slots(((CDC, first),), source) == {"cdc"}
            assert copy_at(n2) == moved
            assert n2.follow_logical_slots(((CDC, first),), source) == set()

            # not published yet (a new primary that has not made it): the copy is kept as it is
            assert n2.follow_logical_slots(((CDC, None),), source) == set() and copy_at(n2) == moved

            # no longer in the config: the copy goes, the primary's slot is the primary's business
            assert n2.follow_logical_slots((), source) == set()
            assert copy_at(n2) is None and copy_at(n1) == moved
        finally:
            for pg in (n1, n2):
                pg.stop("immediate")
                pg.close()

    run_as_postgres(body, timeout_s=150)


def wal_name(number: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{number // 256:08X}{number % 256:08X}"  # 16 MB segments


def test_copies_bring_the_wal_their_restart_positions_need(run_as_postgres, pg_dir: Path) -> None:
    """Two slots older than the replica's base backup: the replica never had the WAL from their restart
    positions. The copies bring those segments (read on the primary as the rewind role, marked archived),
    so they can be advanced (which decodes from there) and used after a promotion."""
    s1, s2, source = pair(pg_dir)
    cdc2 = PermanentSlot("cdc2", "postgres", "test_decoding")
    size = 16 << 20

    def restart_of(pg: Postgres, name: str = "cdc") -> int:
        return parse_lsn(pg.query("SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                                  (name,))[0][0])

    def body() -> None:
        n1, n2 = Postgres(s1), Postgres(s2)
        try:
            n1.bootstrap(timeout_s=60)
            assert n1.ensure_slots({"n2"}) == ({"n2"}, set())
            assert n1.ensure_logical_slots((CDC,)) == ({"cdc"}, set())
            n1.query("INSERT INTO t VALUES (0)")
            n1.query("SELECT pg_switch_wal()")
            assert n1.ensure_logical_slots((CDC, cdc2)) == ({"cdc2"}, set())  # a segment later than cdc
            for v in range(3):  # the base backup starts segments later than both slots
                n1.query("INSERT INTO t VALUES (%s)", (v,))
                n1.query("SELECT pg_switch_wal()")
            n1.query("CHECKPOINT")
            state = bytes(n1.query("SELECT pg_read_binary_file('pg_replslot/cdc/state')")[0][0])
            assert logical_slots.state_restart(state) == restart_of(n1), "the state file's restart position"
            n2.clone(source)
            assert n2.start(source, "n2", timeout_s=30)
            first, second = published(n1), dict(n1.observe().slots)["cdc2"]
            poll(lambda: (n2.observe().replay_lsn or 0) >= max(first, second), what="n2 replayed up to the slots")
            before = logical_slots.wal_copy.local_numbers(s2.data_dir, size)
            lacking = set(range(restart_of(n1) // size, min(before)))
            assert restart_of(n1) // size < restart_of(n1, "cdc2") // size < min(before), \
                "the scenario: two slots in different segments, both before the replica's WAL"

            assert n2.follow_logical_slots(((CDC, first), (cdc2, second)), source) == {"cdc", "cdc2"}
            assert restart_of(n2) == restart_of(n1) and restart_of(n2, "cdc2") == restart_of(n1, "cdc2")
            wal = os.path.join(s2.data_dir, "pg_wal")
            assert lacking <= logical_slots.wal_copy.local_numbers(s2.data_dir, size)
            assert {wal_name(n) + ".done" for n in lacking} <= set(os.listdir(os.path.join(wal, "archive_status"))), \
                "copied segments count as archived"
            assert not [n for n in os.listdir(wal) if logical_slots.wal_copy.TMP_SUFFIX in n]

            # the consumer confirms more: the copy is advanced, which decodes from its restart position
            n1.query("INSERT INTO t SELECT generate_series(1, 50)")
            assert n1.query("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")[0][0] > 50
            moved = published(n1)
            poll(lambda: (n2.observe().replay_lsn or 0) >= moved, what="n2 replayed up to the new position")
            assert n2.follow_logical_slots(((CDC, moved), (cdc2, second)), source) == set(), "advanced, not copied"
            assert copy_at(n2) == moved
        finally:
            for pg in (n1, n2):
                pg.stop("immediate")
                pg.close()

    run_as_postgres(body, timeout_s=150)


def test_a_copy_without_its_wal_is_unusable_and_made_again(run_as_postgres, pg_dir: Path) -> None:
    """A copy whose WAL is not whole here (made by an earlier version, or its WAL lost) would fail the
    consumer after a promotion: it is never called ready, even once the primary keeps its catalog rows,
    and it is made again, with its WAL."""
    s1, s2, source = pair(pg_dir)

    def body() -> None:
        n1, n2 = Postgres(s1), Postgres(s2)
        try:
            n1.bootstrap(timeout_s=60)
            assert n1.ensure_slots({"n2"}) == ({"n2"}, set())
            assert n1.ensure_logical_slots((CDC,)) == ({"cdc"}, set())
            n1.query("SELECT pg_switch_wal()")
            n2.clone(source)
            assert n2.start(source, "n2", timeout_s=30)
            first = published(n1)
            poll(lambda: (n2.observe().replay_lsn or 0) >= first, what="n2 replayed up to the slot")
            # the state file alone, as a copy made without its WAL would be
            state = n1.query("SELECT pg_read_binary_file('pg_replslot/cdc/state')")[0][0]
            restart = parse_lsn(n1.query("SELECT restart_lsn::text FROM pg_replication_slots "
                                         "WHERE slot_name = 'cdc'")[0][0])
            files = [logical_slots.SlotFile("cdc", "postgres", "test_decoding", bytes(state), first, restart)]
            n2.restart(between=lambda: logical_slots.install(s2, files, 0.0))
            assert copy_at(n2) == first
            # the primary keeps catalog rows for n2 (hot_standby_feedback reports the copy's catalog_xmin):
            # by the catalog rule alone the copy would now be ready; within the copy backoff it is not made
            # again, and it is never called ready
            poll(lambda: n1.query("SELECT catalog_xmin IS NOT NULL FROM pg_replication_slots "
                                  "WHERE slot_name = 'n2'") == [(True,)], what="n2's feedback on the primary")
            logical_slots._copied_at[(s2.data_dir, "cdc")] = time.monotonic()
            for _ in range(3):
                assert n2.follow_logical_slots(((CDC, first),), source) == set()
                assert logical_slots.unready(s2) == ["cdc"]
            logical_slots._copied_at.clear()

            assert n2.follow_logical_slots(((CDC, first),), source) == {"cdc"}, "made again"
            assert restart // (16 << 20) in logical_slots.wal_copy.local_numbers(s2.data_dir, 16 << 20)
        finally:
            for pg in (n1, n2):
                pg.stop("immediate")
                pg.close()

    run_as_postgres(body, timeout_s=150)
