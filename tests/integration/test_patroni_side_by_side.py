"""raftpg beside a real Patroni 4.1.5 cluster on the same machine (issue 13's "done means").

Both get three loopback nodes with the same profile (ttl 20 / loop_wait 1 / retry_timeout 4: Patroni refuses
a shorter ttl), the same tags (``dc: a`` everywhere), PostgreSQL from the same binaries; Patroni runs its
own Raft from the bench-only virtualenv (scripts/patroni-venv.sh). Once each has a primary with both
replicas streaming, the test diffs, per role:

- the status code of every health endpoint, with query parameters;
- the keys of GET /patroni (raftpg may add its own: ``RAFTPG_EXTRA_KEYS``; keys Patroni has and raftpg
  lacks must be in ``KNOWN_MISSING`` with the reason the README gives);
- the series names of GET /metrics (every Patroni name must be there);
- ``list -f json``: keys and values of each member's row (``patronictl`` against Patroni, ``raftpgctl``
  against raftpg; positions differ by nature, so LSN columns are compared by presence).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from measure import settled  # noqa: E402
from patroni_cluster import PatroniCluster, ensure_patroni  # noqa: E402

from raftpg.cli.local_cluster import LocalCluster  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the agents as the postgres user (root needed)")

PROFILE = {"ttl": 20, "loop_wait": 1, "retry_timeout": 4, "maximum_lag_on_failover": 1048576}
TAGS = {"dc": "a"}
PATHS = [
    "/", "/primary", "/leader", "/read-write", "/master", "/replica", "/read-only", "/sync", "/synchronous",
    "/async", "/asynchronous", "/read-only-sync", "/quorum", "/read-only-quorum", "/standby-leader", "/health",
    "/liveness", "/readiness", "/replica?lag=1MB", "/replica?tag_dc=a", "/replica?tag_dc=b",
    "/replica?tag_missing=x", "/replica?tag_nofailover=false", "/read-only?tag_dc=b", "/primary?tag_dc=b",
    "/leader?tag_dc=b", "/async?lag=10MB", "/readiness?lag=1MB", "/readiness?lag=1MB&mode=write",
    "/replica?dc=b",
]
# GET /patroni keys Patroni 4.1.5 has that raftpg does not (README: "Differences from Patroni").
KNOWN_MISSING: dict[str, str] = {}
# list -f json columns patronictl shows and raftpgctl does not (README: "Differences from Patroni")
KNOWN_LIST_MISSING: dict[str, str] = {}
# raftpg's additions (README): always-present booleans and raftpg's own blocks
RAFTPG_EXTRA_KEYS = {"witness", "pause", "pending_restart", "sync_standby", "cluster_unlocked", "decision",
                     "raft", "api_authentication", "synchronous_mode", "tags", "replication",
                     "replication_state", "dcs_problems", "error"}


def http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def roles(cluster: LocalCluster) -> list[str] | None:
    try:
        docs = [json.loads(http(f"http://127.0.0.1:{spec.api_port}/patroni")[1]) for spec in cluster.nodes.values()]
    except (OSError, ValueError):
        return None
    return sorted(f"{doc.get('role')} {doc.get('state')}" for doc in docs)


def role_of(base: str) -> str:
    code, body = http(f"{base}/patroni")
    return json.loads(body)["role"] if code == 200 else "unknown"


def observe(cluster: LocalCluster) -> dict[str, Any]:
    """Per role (primary, replica): health codes, /patroni document, metric names."""
    seen: dict[str, Any] = {}
    for name, spec in cluster.nodes.items():
        base = f"http://127.0.0.1:{spec.api_port}"
        role = role_of(base)
        if role in seen:
            continue
        codes = {path: http(base + path)[0] for path in PATHS}
        status = json.loads(http(f"{base}/patroni")[1])
        metrics = {line.split("{")[0].split(" ")[0] for line in http(f"{base}/metrics")[1].splitlines()
                   if line and not line.startswith("#")}
        seen[role] = {"name": name, "codes": codes, "status": status, "metrics": metrics}
    return seen


def list_json(argv: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def ctl_list(cluster: Any, system: str) -> list[dict[str, Any]]:
    """``list -f json`` of ``system`` (patronictl against Patroni, raftpgctl against raftpg)."""
    ctl = (os.path.join(os.path.dirname(cluster.patroni), "patronictl") if system == "patroni"
           else os.path.join(os.path.dirname(sys.executable), "raftpgctl"))
    return list_json([ctl, "-c", cluster.config_path("n1"), "list", cluster.scope, "-f", "json"])


def replica_states(cluster: Any, system: str) -> list[str] | None:
    try:
        rows = ctl_list(cluster, system)
    except (subprocess.SubprocessError, ValueError):
        return None
    return sorted(row.get("State", "") for row in rows if row.get("Role") != "Leader")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    try:
        ensure_patroni()
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"Patroni 4.1.5 cannot be installed here: {exc}")
    base = tempfile.mkdtemp(prefix="raftpg-side-")
    os.chmod(base, 0o755)
    clusters = {}
    try:
        for system, cls in (("patroni", PatroniCluster), ("raftpg", LocalCluster)):
            cluster = cls(os.path.join(base, system), ["n1", "n2", "n3"], dcs=PROFILE, scope=f"side{system}")
            for spec in cluster.nodes.values():
                spec.tags = dict(TAGS)
            cluster.start_all()
            clusters[system] = cluster
        for cluster in clusters.values():
            settled(cluster, timeout_s=240)
            # each agent's own view caught up: a primary and two replicas, all running (Patroni's REST says
            # "uninitialized" for a moment after its PostgreSQL already streams)
            cluster.wait_for(lambda cluster=cluster: roles(cluster) == ["primary running", "replica running",
                                                                        "replica running"],
                             120, "every agent reporting its role")
        # and each cluster's member list shows both replicas streaming (Patroni publishes a replica's
        # replication state a loop after its REST API says "running": comparing earlier compares timing)
        for system, cluster in clusters.items():
            cluster.wait_for(lambda cluster=cluster, system=system: replica_states(cluster, system)
                             == ["streaming", "streaming"], 120, f"{system}: list showing both replicas streaming")
        yield clusters
    finally:
        for cluster in clusters.values():
            if isinstance(cluster, PatroniCluster):
                cluster.close(remove=True)
            else:
                cluster.destroy(remove=True)
        shutil.rmtree(base, ignore_errors=True)


def test_health_codes_status_keys_and_metric_names_match_patroni(both):
    patroni, raftpg = observe(both["patroni"]), observe(both["raftpg"])
    assert set(patroni) == set(raftpg) == {"primary", "replica"}
    for role in ("primary", "replica"):
        differing = {p: (patroni[role]["codes"][p], raftpg[role]["codes"][p]) for p in PATHS
                     if patroni[role]["codes"][p] != raftpg[role]["codes"][p]}
        assert differing == {}, f"{role}: (patroni, raftpg) codes differ"
        missing = set(patroni[role]["status"]) - set(raftpg[role]["status"]) - set(KNOWN_MISSING)
        assert missing == set(), f"{role}: /patroni keys Patroni has and raftpg lacks"
        xlog_missing = set(patroni[role]["status"].get("xlog", {})) - set(raftpg[role]["status"].get("xlog", {}))
        assert xlog_missing == set(), f"{role}: xlog keys"
        names = {n for n in patroni[role]["metrics"] if n.startswith("patroni_")}
        assert names and names - raftpg[role]["metrics"] == set(), f"{role}: metric names"


def test_list_json_keys_and_values_match_patronictl(both):
    patroni, raftpg = both["patroni"], both["raftpg"]
    theirs, ours = ctl_list(patroni, "patroni"), ctl_list(raftpg, "raftpg")

    def by_role(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {row["Role"]: row for row in rows}

    assert sorted(r["Role"] for r in theirs) == sorted(r["Role"] for r in ours)
    for role, row in by_role(theirs).items():
        mine = by_role(ours)[role]
        assert set(row) - set(KNOWN_LIST_MISSING) == set(mine), f"{role}: keys"
        for key in ("Role", "State", "TL", "Receive Lag", "Replay Lag"):
            if key in row:
                assert mine[key] == row[key], f"{role}: {key}"
        assert [k for k in row if k.endswith("LSN")] == [k for k in mine if k.endswith("LSN")]
        assert row["Host"].count(":") == mine["Host"].count(":")  # host:port on loopback, both


def run_ctl(argv: list[str], password: str | None = None) -> str:
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True, env=env).stdout


def test_query_and_dsn_answer_as_patronictl_does(both):
    patroni, raftpg = both["patroni"], both["raftpg"]
    patronictl = [os.path.join(os.path.dirname(patroni.patroni), "patronictl"), "-c", patroni.config_path("n1")]
    raftpgctl = [os.path.join(os.path.dirname(sys.executable), "raftpgctl"), "-c", raftpg.config_path("n1")]
    # patronictl connects as -U with libpq's PGPASSWORD (it never reads the config's passwords); so does
    # raftpgctl with -U (without it, raftpgctl uses the config's superuser)
    sql = ["-U", "postgres", "-c", "SELECT pg_is_in_recovery() AS standby, 1 AS one"]
    for role in ("primary", "replica"):
        theirs = run_ctl([*patronictl, "query", patroni.scope, "-r", role, *sql, "--format", "json"],
                         patroni.pg_passwords["superuser"])
        ours = run_ctl([*raftpgctl, "query", raftpg.scope, "-r", role, *sql, "--format", "json"],
                       raftpg.pg_passwords["superuser"])
        assert json.loads(ours) == json.loads(theirs), role
    theirs = run_ctl([*patronictl, "dsn", patroni.scope]).strip()
    ours = run_ctl([*raftpgctl, "dsn", raftpg.scope]).strip()
    assert ours.split("=")[0] == theirs.split("=")[0] and ours.count("=") == theirs.count("=") == 2
