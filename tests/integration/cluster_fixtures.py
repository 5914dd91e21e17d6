"""Fixtures for tests that run real agents and real PostgreSQL on loopback (raftpg.cli.local_cluster.LocalCluster).

Every cluster is closed at the end of its test, also on failure: agents get SIGTERM (they stop their
PostgreSQL), leftovers are killed by PID, and the base directory is removed unless RAFTPG_KEEP=1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from raftpg.cli.local_cluster import LocalCluster

PG_BIN = "/usr/lib/postgresql"


def need_postgres() -> None:
    if not os.path.isdir(PG_BIN) or not shutil.which("runuser"):
        pytest.skip("PostgreSQL server binaries are not installed")


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    need_postgres()
    clusters: list[LocalCluster] = []

    def make(names: list[str], **kwargs: Any) -> LocalCluster:
        base = tempfile.mkdtemp(prefix=f"raftpg-{request.node.name[:40]}-", dir="/tmp")
        os.chmod(base, 0o755)
        cluster = LocalCluster(base, names, python=os.environ.get("RAFTPG_PYTHON"), **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        _dump_logs(cluster)  # captured: pytest shows it only when the test fails
        cluster.destroy(remove=os.environ.get("RAFTPG_KEEP") != "1")  # no clean stops: nothing checks them


def _dump_logs(cluster: LocalCluster) -> None:
    for name in cluster.nodes:
        try:
            with open(cluster.log_path(name), errors="replace") as f:
                tail = f.readlines()[-60:]
            print(f"----- {name} agent.log (last lines) -----\n" + "".join(tail))
        except OSError:
            pass


def wait_primary(cluster: LocalCluster, timeout_s: float = 60.0, exclude: str | None = None) -> str:
    def found() -> str | None:
        primary = cluster.primary()
        return primary if primary and primary != exclude else None
    return cluster.wait_for(found, timeout_s, "a primary" + (f" other than {exclude}" if exclude else ""))


def sql(cluster: LocalCluster, name: str, query: str, params: Any = None, autocommit: bool = True) -> list:
    with psycopg.connect(cluster.dsn(name), autocommit=autocommit) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def try_sql(cluster: LocalCluster, name: str, query: str, params: Any = None) -> list | None:
    try:
        return sql(cluster, name, query, params)
    except psycopg.Error:
        return None


def streaming_replicas(cluster: LocalCluster, primary: str) -> set[str]:
    rows = try_sql(cluster, primary, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
    return {r[0] for r in rows or []}


def wait_streaming(cluster: LocalCluster, primary: str, replicas: set[str], timeout_s: float = 90.0) -> None:
    cluster.wait_for(lambda: replicas <= streaming_replicas(cluster, primary), timeout_s,
                     f"{sorted(replicas)} streaming from {primary}")


def system_identifier(cluster: LocalCluster, name: str) -> str:
    return str(sql(cluster, name, "SELECT system_identifier FROM pg_control_system()")[0][0])


def monotonic() -> float:
    return time.monotonic()
