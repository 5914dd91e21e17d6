"""Poison written straight into a running cluster's store: real agents, real PostgreSQL, the embedded Raft
and a real etcd.

A three-node cluster runs; then a member key (of a member that does not exist, so nobody rewrites it),
the failover key and the config key get values that used to crash every node's HA cycle (``1e999``,
``NaN``, a 400-digit ttl, 100k-deep nesting, invalid UTF-8). While they are there the primary keeps its
key and keeps accepting writes, every node keeps cycling and reports the problem in ``GET /patroni``, the
primary clears the unreadable failover key, and ``/cluster`` and ``/metrics`` answer. Once the poison is
removed, no node reports a problem and the cluster is as before.

How the poison gets in: on etcd, through its JSON gateway; on the embedded Raft, through a Raft driver
process (``raftpg.testing.raft_driver``) added as a fourth member with the cluster's password, the way any
client of the store could write, and removed afterwards.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
import urllib.parse
from typing import Any, Protocol

import httpx
import pytest
from cluster_fixtures import sql, streaming_replicas, try_sql, wait_primary, wait_streaming
from raft_helpers import Node, Processes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

FAST = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4}
DEEP = "[" * 100_000 + "]" * 100_000
# a member claiming a WAL position no float can hold, with an unreadable tag
POISON_MEMBER = b'{"role":"replica","state":"streaming","xlog_location":1e999,"tags":{"nofailover":"\xff"}}'
POISON_CONFIG = '{"ttl":' + "1" * 400 + ',"loop_wait":1,"retry_timeout":4,"maximum_lag_on_failover":NaN}'
CYCLES = re.compile(r"^raftpg_ha_cycles_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


class Store(Protocol):
    def get(self, relative: str) -> str | None: ...

    def put(self, relative: str, value: str | bytes) -> None: ...

    def delete(self, relative: str) -> None: ...


class EtcdStore:
    """Keys under the cluster's scope, straight through etcd's v3 JSON gateway (bytes stay bytes)."""

    def __init__(self, endpoint: str, scope: str) -> None:
        self.base, self.prefix = f"http://{endpoint}/v3", f"/service/{scope}/"

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.base + path, json=body, timeout=10.0)
        response.raise_for_status()
        return response.json()

    def _key(self, relative: str) -> str:
        return base64.b64encode((self.prefix + relative).encode()).decode()

    def get(self, relative: str) -> str | None:
        kvs = self._call("/kv/range", {"key": self._key(relative)}).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def put(self, relative: str, value: str | bytes) -> None:
        raw = value if isinstance(value, bytes) else value.encode()
        self._call("/kv/put", {"key": self._key(relative), "value": base64.b64encode(raw).decode()})

    def delete(self, relative: str) -> None:
        self._call("/kv/deleterange", {"key": self._key(relative)})


class RaftStore:
    """Keys under the cluster's scope through a Raft driver that is a member of the agents' Raft. The
    store holds text: bytes that are not UTF-8 go in as the JSON escape ``\\udcff``, which is text the
    store accepts (a lone surrogate itself it refuses) and the agents' codec refuses on read."""

    def __init__(self, driver: Node, scope: str) -> None:
        self.driver, self.prefix = driver, f"/service/{scope}/"

    def get(self, relative: str) -> str | None:
        return self.driver.value(self.prefix + relative)

    def put(self, relative: str, value: str | bytes) -> None:
        text = value.decode("utf-8", "backslashreplace").replace("\\xff", "\\udcff") \
            if isinstance(value, bytes) else value
        reply = self.driver.put(self.prefix + relative, text, timeout_s=10.0)
        assert reply.ok, reply

    def delete(self, relative: str) -> None:
        reply = self.driver.request("POST", "/delete", {"key": self.prefix + relative, "timeout_s": 10.0},
                                    timeout_s=10.0)
        assert reply.ok, reply


# ---------------------------------------------------------------------------------------------- helpers
def problems(cluster: Any, name: str) -> list[str] | None:
    status, body = cluster.api(name, "/patroni")
    return body.get("dcs_problems", []) if status in (200, 503) and isinstance(body, dict) else None


def cycles(cluster: Any, name: str) -> float:
    status, body = cluster.api(name, "/metrics")
    found = CYCLES.search(body) if status == 200 and isinstance(body, str) else None
    return float(found.group(1)) if found else -1.0


class Rows:
    """Inserts rows into the primary, one per call; every insert must be acknowledged."""

    def __init__(self, cluster: Any, primary: str) -> None:
        self.cluster, self.primary, self.count = cluster, primary, 0
        sql(cluster, primary, "CREATE TABLE poison_rows(v int)")

    def insert(self) -> None:
        sql(self.cluster, self.primary, "INSERT INTO poison_rows VALUES (%s)", (self.count,))
        self.count += 1


def run_poison_scenario(cluster: Any, store: Store) -> None:
    primary = wait_primary(cluster, 90)
    replicas = set(cluster.nodes) - {primary}
    wait_streaming(cluster, primary, replicas)
    rows = Rows(cluster, primary)
    good_config = store.get("config")
    assert good_config is not None

    store.put("members/n9", POISON_MEMBER)
    store.put("failover", '{"leader":"' + primary + '","member":' + DEEP + "}")
    store.put("config", POISON_CONFIG)

    def everyone_reports_the_poison() -> bool:
        rows.insert()
        assert cluster.primary() == primary, "the primary changed while the DCS held poison"
        return all(any(p.startswith("config") for p in problems(cluster, n) or []) and
                   any(p.startswith("members/n9") for p in problems(cluster, n) or []) for n in cluster.nodes)

    cluster.wait_for(everyone_reports_the_poison, 60, "every node to report the poisoned keys")
    seen = {name: cycles(cluster, name) for name in cluster.nodes}

    def everyone_kept_cycling() -> bool:
        rows.insert()  # the primary keeps accepting writes (raises otherwise)
        assert cluster.primary() == primary, "the primary changed while the DCS held poison"
        return all(cycles(cluster, name) >= seen[name] + 5 for name in cluster.nodes)

    cluster.wait_for(everyone_kept_cycling, 60, "five more cycles on every node")
    cluster.wait_for(lambda: store.get("failover") is None, 30, "the primary to clear the unreadable failover key")
    for name in cluster.nodes:
        for path in ("/cluster", "/metrics", "/history", "/config"):
            assert cluster.api(name, path)[0] == 200, f"GET {path} on {name}"
    assert streaming_replicas(cluster, primary) == replicas

    store.delete("members/n9")
    store.put("config", good_config)
    cluster.wait_for(lambda: all(problems(cluster, n) == [] for n in cluster.nodes), 60,
                     "no node to report a DCS problem")
    rows.insert()
    assert cluster.primary() == primary
    wait_streaming(cluster, primary, replicas)
    assert sql(cluster, primary, "SELECT count(*) FROM poison_rows") == [(rows.count,)]
    cluster.wait_for(lambda: all(try_sql(cluster, n, "SELECT count(*) FROM poison_rows") == [(rows.count,)]
                                 for n in replicas), 30, "every acknowledged row on the replicas")


# ---------------------------------------------------------------------------------------------- tests
def test_poison_in_the_embedded_raft_store(make_cluster) -> None:
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST, scope="poison-raft")
    cluster.start_all()
    primary = wait_primary(cluster, 90)
    procs = Processes()
    base = tempfile.mkdtemp(prefix="raftpg-poison-driver-", dir="/tmp")
    driver = Node(name="poisoner", data_dir=os.path.join(base, "raft"), log_path=os.path.join(base, "driver.log"),
                  procs=procs, password=cluster.raft_password,
                  partners=[spec.raft_addr for spec in cluster.nodes.values()])
    os.makedirs(driver.data_dir)
    try:
        driver.start()
        status, body = cluster.api_post(primary, "/raft/members", {"addr": driver.addr}, timeout_s=20.0)
        assert status == 200, body
        def reads_the_config() -> bool:
            reply = driver.get("/service/poison-raft/config", timeout_s=2.0)
            return reply.status == 200 and reply.body.get("kv") is not None

        wait_until(reads_the_config, 30, "the driver to read the store as a member")
        # a lone surrogate is refused by the store itself (it used to stop the store on every replica)
        refused = driver.put("/service/poison-raft/members/n8", "\udcff", timeout_s=10.0)
        assert refused.status == 400 and refused.body.get("error") == "rejected", refused
        run_poison_scenario(cluster, RaftStore(driver, "poison-raft"))
        addr = urllib.parse.quote(driver.addr, safe="")
        status, body = cluster.api_post(primary, f"/raft/members/{addr}", {}, method="DELETE", timeout_s=20.0)
        assert status == 200, body
    finally:
        procs.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_poison_in_etcd(make_cluster) -> None:
    from etcd_fixtures import etcd_binary, start_etcd
    if etcd_binary() is None:
        pytest.skip("Debian etcd-server is not installed")
    etcd = start_etcd()
    try:
        cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST, scope="poison-etcd",
                               dcs_section={"etcd3": {"hosts": [etcd.endpoint]}})
        cluster.start_all()
        run_poison_scenario(cluster, EtcdStore(etcd.endpoint, "poison-etcd"))
    finally:
        etcd.cleanup()
