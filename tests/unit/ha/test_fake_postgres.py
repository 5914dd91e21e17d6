"""FakePostgres behaves like the parts of PostgreSQL the HA simulation relies on."""

from __future__ import annotations

import pytest

from raftpg.clock import FakeClock
from raftpg.model import DataDir
from raftpg.testing.fake_postgres import FakePostgres, PgError, PgNetwork, parse_standby_names


def url(name: str) -> str:
    return f"postgresql://replicator@{name}:5432/postgres"


@pytest.fixture
def cluster() -> tuple[FakeClock, PgNetwork, FakePostgres, FakePostgres]:
    clock = FakeClock()
    network = PgNetwork(clock)
    primary, replica = FakePostgres("p", network, clock), FakePostgres("r", network, clock)
    primary.bootstrap()
    primary.ensure_slots({"r"})
    replica.clone(url("p"), 60)
    replica.start(url("p"), "r", as_replica=True, timeout_s=10)
    network.step()
    return clock, network, primary, replica


def test_a_replica_streams_only_through_a_slot_its_upstream_has(cluster) -> None:
    _, network, primary, replica = cluster
    primary.ensure_slots(set())
    network.step()
    assert not replica.observe().streaming  # "replication slot "r" does not exist"
    primary.ensure_slots({"r"})
    network.step()
    assert replica.observe().streaming


def test_bootstrap_refuses_existing_data(cluster) -> None:
    _, _, primary, _ = cluster
    with pytest.raises(PgError, match="initdb refuses"):
        primary.bootstrap()


def test_a_replica_catches_up_only_while_its_link_is_up(cluster) -> None:
    _, network, primary, replica = cluster
    assert replica.observe().streaming and replica.lsn == primary.lsn
    network.cut.add("r")
    primary.write(3)
    network.step()
    assert replica.lsn < primary.lsn and not replica.observe().streaming
    network.cut.clear()
    network.step()
    assert replica.lsn == primary.lsn


def test_promote_starts_a_new_timeline_and_the_old_primary_diverges_until_rewound(cluster) -> None:
    _, network, primary, replica = cluster
    primary.crash()
    primary.wal.append(network.new_record())  # WAL the replica never received
    replica.promote(10)
    replica.ensure_slots({"p"})
    assert replica.timeline == 2 and replica.observe().is_primary
    assert primary.observe().cluster_state == "in production"
    primary.start(url("r"), "p", as_replica=True, timeout_s=10)
    network.step()
    assert not primary.observe().streaming  # diverged: it cannot follow
    primary.stop("fast", 10)
    assert primary.rewind(url("r"), 60)
    primary.start(url("r"), "p", as_replica=True, timeout_s=10)
    network.step()
    assert primary.observe().streaming and primary.timeline == 2


def test_a_clean_shutdown_hands_its_last_wal_to_streaming_replicas(cluster) -> None:
    _, _, primary, replica = cluster
    primary.stop("fast", 10)
    assert replica.wal == primary.wal
    assert primary.observe().cluster_state == "shut down"


def test_the_fence_stops_a_primary_whose_lease_is_not_renewed(cluster) -> None:
    clock, _, primary, _ = cluster
    primary.fence_at(clock.monotonic() + 5.0)
    clock.advance(4.9)
    assert primary.accepting_writes
    clock.advance(0.2)  # past the deadline plus the supervisor's polling latency
    assert not primary.accepting_writes
    assert not primary.observe().running and primary.fenced_count == 1
    assert primary.write(1) == (0, 0)


def test_synchronous_commits_wait_for_a_synchronous_standby(cluster) -> None:
    _, network, primary, replica = cluster
    primary.set_synchronous_standby_names('FIRST 1 ("r")')
    assert [row.sync_state for row in primary.observe().replication] == ["sync"]
    network.cut.add("r")
    assert primary.write(2) == (2, 0)
    network.step()
    assert not set(primary.wal[-2:]) & network.acknowledged
    network.cut.clear()
    network.step()
    assert set(primary.wal[-2:]) <= network.acknowledged


def test_standby_names_parsing() -> None:
    assert parse_standby_names("") == (0, ())
    assert parse_standby_names("*") == (1, None)
    assert parse_standby_names('FIRST 2 ("a", "b""c")') == (2, ("a", 'b"c'))


def test_move_data_aside_keeps_the_data_and_leaves_an_empty_directory(cluster) -> None:
    _, _, _, replica = cluster
    replica.stop("fast", 10)
    kept = replica.move_data_aside()
    assert replica.observe().data_dir == DataDir.MISSING and replica.kept_data_dirs == [kept]
