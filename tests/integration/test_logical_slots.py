"""Permanent logical slots across a failover: real agents, real PostgreSQL 15, ``pg_recvlogical`` with
``test_decoding``, the embedded Raft store, on loopback.

PostgreSQL 15 has no failover slots: each replica keeps a copy of the primary's slot (its state file,
copied once, then advanced to the position the primary publishes: what the consumer confirmed;
raftpg.pg.logical_slots). A consumer that moves to the new primary after a failover gets exactly the
changes it had not confirmed: nothing it confirmed is sent again, nothing is skipped. The old primary,
back as a replica, gets a copy again.

Timing is never asserted; every wait is a poll with a deadline.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import sql, try_sql, wait_primary, wait_streaming
from test_dcs_poison_cluster import cycles

from raftpg.ha.slots import SLOTS_REFRESH_S

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FAST = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4}
CDC = {"cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}
LOGICAL = {"*": {"bootstrap": {"dcs": {"postgresql": {"parameters": {"wal_level": "logical"}}}}}}
PG_RECVLOGICAL = "/usr/lib/postgresql/15/bin/pg_recvlogical"
ROW = re.compile(r"^table public\.cdc_rows: INSERT: id\[integer\]:(\d+)$")


def slot(cluster: Any, name: str) -> tuple[str, str] | None:
    """(confirmed_flush_lsn, plugin) of ``cdc`` on ``name``'s PostgreSQL, or None."""
    rows = try_sql(cluster, name, "SELECT confirmed_flush_lsn::text, plugin FROM pg_replication_slots "
                                  "WHERE slot_name = 'cdc'")
    return (rows[0][0], rows[0][1]) if rows else None


READY = "logical slot cdc: its copy is safe to use after a failover"
COPYING = "copying logical slot(s) cdc from the primary"


def logged(cluster: Any, name: str, text: str) -> bool:
    with open(cluster.log_path(name), errors="replace") as f:
        return text in f.read()


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def insert(cluster: Any, name: str, ids: range) -> None:
    for i in ids:  # one transaction each: each is its own BEGIN/COMMIT in the stream
        sql(cluster, name, "INSERT INTO cdc_rows VALUES (%s)", (i,))


def consume(cluster: Any, name: str, out: Path, until_lsn: str) -> list[int]:
    """Run pg_recvlogical on ``name`` from wherever the slot says until ``until_lsn`` (it confirms what it
    wrote, then exits); the row ids it received, in order."""
    proc = subprocess.Popen([PG_RECVLOGICAL, "-d", cluster.dsn(name), "--slot", "cdc", "--start", "--no-loop",
                             "--endpos", until_lsn, "-f", str(out), "-F", "0", "-s", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"pg_recvlogical on {name} failed: {err.decode(errors='replace')}"
    return [int(m.group(1)) for line in out.read_text().splitlines() if (m := ROW.match(line))]


def three_with_a_slot(make_cluster: Any) -> tuple[Any, str, set[str]]:
    """Three agents with the permanent logical slot cdc and a table cdc_rows: (cluster, primary, replicas)."""
    cluster = make_cluster(["n1", "n2", "n3"], dcs={**FAST, "slots": CDC}, extra=LOGICAL)
    cluster.start_all()
    primary = wait_primary(cluster, 90)
    replicas = set(cluster.nodes) - {primary}
    wait_streaming(cluster, primary, replicas)
    cluster.wait_for(lambda: slot(cluster, primary) is not None, 60, f"the slot cdc made on {primary}")
    sql(cluster, primary, "CREATE TABLE cdc_rows(id int PRIMARY KEY)")
    return cluster, primary, replicas


def test_a_cdc_consumer_goes_on_after_a_failover_with_nothing_resent_or_skipped(make_cluster, tmp_path) -> None:
    cluster, primary, replicas = three_with_a_slot(make_cluster)
    insert(cluster, primary, range(1, 61))
    end = sql(cluster, primary, "SELECT pg_current_wal_lsn()::text")[0][0]
    first = consume(cluster, primary, tmp_path / "first.txt", end)
    assert first == list(range(1, 61))
    confirmed = slot(cluster, primary)
    assert confirmed is not None and lsn(confirmed[0]) >= lsn(end)

    # every replica's copy reaches what the consumer confirmed (published by the primary, then advanced)
    def copies_caught_up() -> bool:
        return all((s := slot(cluster, r)) is not None and s == confirmed for r in replicas)
    cluster.wait_for(copies_caught_up, 90, f"the copies of cdc on {sorted(replicas)} at {confirmed[0]}")
    # and they are known to be safe: the primary keeps the catalog rows they need (hot_standby_feedback)
    cluster.wait_for(lambda: all(logged(cluster, r, READY) for r in replicas), 120,
                     f"the copies on {sorted(replicas)} to be safe to use after a failover")

    insert(cluster, primary, range(61, 91))  # committed, replicated, never consumed on the old primary
    at = lsn(sql(cluster, primary, "SELECT pg_current_wal_lsn()::text")[0][0])
    cluster.wait_for(lambda: all((r := try_sql(cluster, n, "SELECT pg_last_wal_replay_lsn()::text"))
                                 and lsn(r[0][0]) >= at for n in replicas), 60, "the replicas replaying 61..90")
    cluster.kill_node(primary)
    new = wait_primary(cluster, 90, exclude=primary)
    insert(cluster, new, range(91, 101))
    end = sql(cluster, new, "SELECT pg_current_wal_lsn()::text")[0][0]
    second = consume(cluster, new, tmp_path / "second.txt", end)
    assert not logged(cluster, new, "promoted with logical slot copies that may not be usable")
    assert not set(second) & set(first), "changes the consumer had confirmed were sent again"
    assert second == list(range(61, 101)), "changes were skipped, repeated or reordered across the failover"

    # the old primary comes back as a replica and gets a copy of the slot again (pg_rewind emptied its
    # pg_replslot), at the new position
    assert not logged(cluster, primary, COPYING), "the first primary never was a replica before"
    cluster.start(primary)
    wait_streaming(cluster, new, {primary}, 120)
    now = slot(cluster, new)
    assert now is not None
    cluster.wait_for(lambda: slot(cluster, primary) == now, 90, f"a copy of cdc on {primary} at {now[0]}")
    assert logged(cluster, primary, COPYING)


def test_a_copy_made_before_any_consumer_is_usable_after_a_failover(make_cluster, tmp_path) -> None:
    """The slot is made at bootstrap, before the replicas are cloned: its restart position lies in WAL the
    replicas never had. Their copies must bring that WAL with them, or a consumer that connects only after
    the failover fails ('requested WAL segment ... has already been removed')."""
    cluster, primary, replicas = three_with_a_slot(make_cluster)
    insert(cluster, primary, range(1, 31))
    at = lsn(sql(cluster, primary, "SELECT pg_current_wal_lsn()::text")[0][0])
    cluster.wait_for(lambda: all(logged(cluster, r, READY) for r in replicas), 180,
                     f"the copies on {sorted(replicas)} to be safe to use after a failover")
    cluster.wait_for(lambda: all((r := try_sql(cluster, n, "SELECT pg_last_wal_replay_lsn()::text"))
                                 and lsn(r[0][0]) >= at for n in replicas), 60, "the replicas replaying 1..30")
    cluster.kill_node(primary)
    new = wait_primary(cluster, 90, exclude=primary)
    insert(cluster, new, range(31, 41))
    end = sql(cluster, new, "SELECT pg_current_wal_lsn()::text")[0][0]
    assert consume(cluster, new, tmp_path / "after.txt", end) == list(range(1, 41))
    assert not logged(cluster, new, "promoted with logical slot copies that may not be usable")


def test_a_slot_removed_from_the_config_is_dropped_on_the_replicas_too(make_cluster) -> None:
    cluster = make_cluster(["n1", "n2"], dcs={**FAST, "slots": CDC}, extra=LOGICAL)
    cluster.start_all()
    primary = wait_primary(cluster, 90)
    (replica,) = set(cluster.nodes) - {primary}
    wait_streaming(cluster, primary, {replica})
    cluster.wait_for(lambda: slot(cluster, replica) is not None, 90, f"a copy of cdc on {replica}")
    # a consumer is connected when the slot leaves the config: the primary keeps it (active) and still
    # publishes it; the replica drops its copy and makes no physical slot under that name
    consumer = subprocess.Popen([PG_RECVLOGICAL, "-d", cluster.dsn(primary), "--slot", "cdc", "--start", "-f", "-"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cluster.wait_for(lambda: try_sql(cluster, primary, "SELECT active FROM pg_replication_slots "
                                                           "WHERE slot_name = 'cdc'") == [(True,)], 30,
                         "the consumer connected")
        status, body = cluster.api_post(primary, "/config", {"slots": None}, method="PATCH")
        assert status == 200, body
        cluster.wait_for(lambda: slot(cluster, replica) is None, 60, f"cdc gone from {replica}")
        start = cycles(cluster, replica)

        def five_more_cycles_without_it() -> bool:
            assert slot(cluster, replica) is None, f"a slot named cdc came back on {replica}"
            return cycles(cluster, replica) >= start + 5
        cluster.wait_for(five_more_cycles_without_it, 60, f"five more cycles of {replica}")
        assert slot(cluster, primary) is not None, "an active slot is never dropped"
    finally:
        consumer.kill()
        consumer.wait()
    # the primary checks its slots again when the wanted set changes or every SLOTS_REFRESH_S (60 s): the
    # slot left the config while active, so it goes at the first check after its consumer did, up to 60 s
    cluster.wait_for(lambda: slot(cluster, primary) is None, SLOTS_REFRESH_S + 30,
                     "cdc dropped on the primary once inactive")
