"""build_api over a real HaLoop (a witness, so no PostgreSQL) and the in-memory DCS."""

from __future__ import annotations

import asyncio
import threading

from api_fakes import make_config, with_client

from raftpg.api.wiring import build_api, raft_membership
from raftpg.clock import FakeClock
from raftpg.dcs.base import DcsError
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha.inputs import Me
from raftpg.ha.loop import HaLoop
from raftpg.model import Member, NodeStatus


class WitnessNode:
    def __init__(self) -> None:
        self.config = make_config("w4")
        self.clock = FakeClock()
        self.dcs = memory_dcs(self.clock, KeyLayout("/service/", "demo"))
        self.raft = None
        self.loop = HaLoop(dcs=self.dcs, pg=None, watchdog=None, clock=self.clock,
                           me=Me("w4", witness=True, api_url="http://127.0.0.1:8008/patroni"),
                           bootstrap_dcs={}, version="0.1.0", on_status=self._set)
        self._lock = threading.Lock()
        self._status = NodeStatus("w4", True)
        self.reloads = 0

    def _set(self, status: NodeStatus) -> None:
        with self._lock:
            self._status = status

    def status(self) -> NodeStatus:
        with self._lock:
            return self._status

    def raft_status(self) -> None:
        return None

    def reload(self) -> None:
        self.reloads += 1


def test_the_api_of_a_real_loop():
    node = WitnessNode()
    node.loop.cycle()
    app = build_api(node)

    async def body(client):
        status = await (await client.get("/patroni")).json()
        codes = [(await client.get(path)).status for path in ("/primary", "/health", "/liveness", "/cluster")]
        reload = (await client.post("/reload")).status
        return status, codes, reload

    status, codes, reload = with_client(app, body)
    assert status["role"] == "witness" and status["patroni"]["name"] == "w4"
    assert status["raft"] is None  # no embedded Raft node here: the in-memory DCS is not one
    assert codes == [503, 503, 200, 200]
    assert reload == 202 and node.reloads == 1


def test_raft_membership_only_for_the_embedded_store():
    assert raft_membership(None) is None  # etcd or Consul: no Raft node
    assert raft_membership(object()) is None  # a store that cannot change its membership
    embedded = type("RaftNodeLike", (), {"add_member": None, "remove_member": None})()
    assert raft_membership(embedded) is embedded


def test_the_details_query_reaches_the_postgres_manager_behind_the_nodes_adapter():
    """Regression (found by the side-by-side test): the node holds a Postgres manager whose
    manager with ``query``; /patroni had no postmaster_start_time on a real node."""
    from raftpg.api.details import DETAILS

    calls = []

    class Manager:
        def query(self, sql, params=None, timeout_s=5.0):
            calls.append(timeout_s)
            return []

    class Adapter:
        pg = Manager()

        def probe(self):
            raise RuntimeError("not used here")

    node = WitnessNode()
    node.pg = Adapter()
    app = build_api(node)
    source = app[DETAILS]
    source._query("SELECT 1")
    assert calls == [1.0]


def test_cluster_reads_the_dcs_afresh_shares_one_read_among_concurrent_requests_and_survives_a_silent_store():
    """GET /cluster (raftpgctl list) showed the HA loop's last view: a member key written since, such as
    a replica that began streaming, appeared only after this node's next cycle, up to loop_wait later.
    Now it reads the store (a local read on the embedded Raft); a burst of requests costs one read; a
    store that fails leaves the last cycle's view."""
    node = WitnessNode()
    node.loop.cycle()
    node.loop.cycle()  # its view holds its own member key now
    node.dcs.touch_member(Member("n2", role="replica", state="streaming"), 30, timeout_s=1)  # after the cycle
    reads = []
    load = node.dcs.load

    def counted(**kwargs):
        reads.append(kwargs)
        if node.dcs_down:
            raise DcsError("no quorum")
        return load(**kwargs)

    node.dcs_down = False
    node.dcs.load = counted  # type: ignore[method-assign]
    app = build_api(node)

    async def body(client):
        answers = await asyncio.gather(*(client.get("/cluster") for _ in range(20)))
        burst = [await a.json() for a in answers]
        reads_in_burst = len(reads)
        node.dcs_down = True
        silent = await (await client.get("/cluster")).json()
        return burst, reads_in_burst, silent

    burst, reads_in_burst, silent = with_client(app, body)
    assert all({m["name"]: m["state"] for m in doc["members"]} == {"n2": "streaming", "w4": "running"}
               for doc in burst)
    assert 1 <= reads_in_burst < 20 and all(r["linearizable"] is False for r in reads)
    assert [m["name"] for m in silent["members"]] == ["w4"]  # the last cycle's view
