"""bench/measure.py's PgWatcher decides when a bootstrap is over and when a failover trial may start: a
clone's pg_basebackup, which streams WAL and shows as "streaming" in pg_stat_replication, must not count
as a replica (it did until 2026-12-05: bootstrap figures ended a clone's length early, and a first failover
trial killed the primary before any replica streamed, losing every row it wrote)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from measure import PgWatcher  # noqa: E402


def watcher(states: dict) -> PgWatcher:
    w = PgWatcher(SimpleNamespace(nodes={name: SimpleNamespace(witness=False) for name in states}))
    w.state = states.get  # (in recovery, streaming count, application names), as PostgreSQL answered
    return w


def test_clones_streaming_wal_are_not_replicas():
    cloning = {"n1": (False, 2, ["pg_basebackup", "pg_basebackup"]), "n2": None, "n3": None}
    assert watcher(cloning).primary_with_replicas(2) is None


def test_the_other_members_streaming_by_name_are():
    half = {"n1": (False, 2, ["n2", "pg_basebackup"]), "n2": (True, 0, []), "n3": None}
    assert watcher(half).primary_with_replicas(2) is None
    assert watcher(half).primary_with_replicas(1) == "n1"
    both = {"n1": (False, 2, ["n3", "n2"]), "n2": (True, 0, []), "n3": (True, 0, [])}
    assert watcher(both).primary_with_replicas(2) == "n1"


def test_a_server_in_recovery_is_never_the_primary():
    cascading = {"n1": (True, 2, ["n2", "n3"]), "n2": (True, 0, []), "n3": (True, 0, [])}
    assert watcher(cascading).primary_with_replicas(2) is None
