"""NodeCommands over the in-memory DCS and a fake HA loop: it records requests, waits for their effect
without blocking the event loop, and maps refusals to HTTP statuses. Also: the write endpoints with the
real commands never answer 500 (schemathesis over the real operations)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import schemathesis
from api_fakes import PRIMARY, REPLICA, WITNESS, FakeView, primary_local, serving
from hypothesis import HealthCheck, settings

from raftpg.api import ApiSettings, NodeCommands, make_app
from raftpg.api.http import REFUSAL_STATUS
from raftpg.clock import FakeClock, SystemClock
from raftpg.consensus.api import KvRejected, KvTimeout
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha.operations import OperationError
from raftpg.model import Member
from raftpg.testing.poll import wait_until

T = 5.0
LSN = 1000


def primary_member(name: str) -> Member:
    return Member(name=name, role="primary", state="running", lsn=LSN, sysid="1", conn_url=f"postgres://{name}")


def replica_member(name: str) -> Member:
    return Member(name=name, role="replica", state="streaming", lsn=LSN, sysid="1", conn_url=f"postgres://{name}")


@pytest.fixture
def dcs():
    store = memory_dcs(FakeClock(), KeyLayout("/service/", "demo"))
    store.initialize(timeout_s=T)
    store.set_initialize("1", timeout_s=T)
    store.set_config({"ttl": 30}, None, timeout_s=T)
    for member in (primary_member("n1"), replica_member("n2")):
        store.touch_member(member, 30, timeout_s=T)
    store.acquire_leader("n1", 30, timeout_s=T)
    store.set_status(LSN, timeout_s=T)
    return store


class FakeLoop:
    def __init__(self, status=PRIMARY, effect=None) -> None:
        self.status = status
        self.requests: list[str] = []
        self.wakes = 0
        self.effect = effect

    def request(self, what: str) -> None:
        self.requests.append(what)
        if self.effect:
            self.effect(self, what)

    def wake(self) -> None:
        self.wakes += 1

    def failsafe_request(self, primary: str, primary_is_me: bool) -> str | None:
        return "failsafe_mode is not enabled"  # HaLoop.failsafe_request's own tests: tests/unit/ha


class FakeRaft:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def add_member(self, addr: str, timeout_s: float = 10.0) -> None:
        if addr == "bad":
            raise KvRejected("not a host:port Raft address: 'bad'")
        self.calls.append(("add", addr))

    def remove_member(self, addr: str, timeout_s: float = 10.0) -> None:
        raise KvTimeout("no answer within 10.0s")

    def transfer_leadership(self, addr: str | None, timeout_s: float = 5.0) -> str:
        return addr or "127.0.0.1:2224"


def commands(dcs, loop=None, raft=None, **kw) -> NodeCommands:
    return NodeCommands(dcs=dcs, loop=loop or FakeLoop(), clock=SystemClock(), raft=raft, timeout_s=1.0,
                        switchover_wait_s=kw.pop("switchover_wait_s", 2.0), restart_wait_s=kw.pop("restart_wait_s", 2.0),
                        **kw)


def refused(coro) -> tuple[int, str]:
    with pytest.raises(OperationError) as info:
        asyncio.run(coro)
    return REFUSAL_STATUS[info.value.kind], info.value.message


def test_switchover_waits_until_the_candidate_runs_as_primary(dcs):
    def primary_agent() -> None:  # plays n1's and n2's HA loops
        failover = wait_until(lambda: dcs.load(timeout_s=T).failover, 5, "the switchover request", interval_s=0.01)
        time.sleep(0.05)  # n1 takes a moment to stop: the API must keep waiting meanwhile
        dcs.hand_over_leader("n1", "n2", 30, timeout_s=T)
        dcs.set_failover(None, failover.revision, timeout_s=T)
        time.sleep(0.05)  # and so does n2 to promote
        dcs.touch_member(primary_member("n2"), 30, timeout_s=T)

    agent = threading.Thread(target=primary_agent)
    agent.start()
    loop = FakeLoop()
    outcome = asyncio.run(commands(dcs, loop).switchover("n1", "n2", None))
    agent.join()
    assert (outcome.http_status, outcome.message, outcome.data) == \
        (200, "switchover: n2 is the new primary", {"leader": "n2"})
    assert loop.wakes == 1


def test_a_switchover_nobody_carries_out_is_503_after_the_wait(dcs):
    status, message = refused(commands(dcs, switchover_wait_s=0.3).switchover("n1", "n2", None))
    assert status == 503 and "not complete" in message


def test_a_scheduled_switchover_answers_202_at_once(dcs):
    outcome = asyncio.run(commands(dcs).switchover("n1", None, "2999-01-01T00:00:00+00:00"))
    assert outcome.http_status == 202 and "scheduled at 2999-01-01T00:00:00+00:00" in outcome.message
    assert refused(commands(dcs).switchover("n1", None, None))[0] == 409
    assert asyncio.run(commands(dcs).cancel_switchover()).http_status == 200


def test_config_commands_return_the_stored_document(dcs):
    outcome = asyncio.run(commands(dcs).patch_config({"ttl": 45, "pause": True}))
    assert outcome.data["config"]["ttl"] == 45 and outcome.data["config"]["pause"] is True
    assert dcs.load(timeout_s=T).paused
    assert refused(commands(dcs).put_config({"ttl": "x"}))[0] == 400


def test_restart_waits_for_a_new_postmaster():
    def effect(loop: FakeLoop, what: str) -> None:
        def later() -> None:
            time.sleep(0.1)
            loop.status = replace(loop.status, cycles=loop.status.cycles + 1,
                                  local=primary_local(postmaster_pid=4242))
        threading.Thread(target=later).start()

    loop = FakeLoop(PRIMARY, effect)
    outcome = asyncio.run(commands(None, loop).restart())
    assert (outcome.http_status, loop.requests) == (200, ["restart"])


def test_restart_not_confirmed_is_503_and_a_witness_has_nothing_to_restart():
    assert refused(commands(None, FakeLoop(PRIMARY), restart_wait_s=0.2).restart())[0] == 503
    assert refused(commands(None, FakeLoop(WITNESS)).restart()) == (412, "this node is a witness: it has no PostgreSQL")


def test_health_checks_answer_while_a_restart_is_awaited():
    loop = FakeLoop(PRIMARY)
    cmds = commands(None, loop, restart_wait_s=1.0)
    view = FakeView(PRIMARY)
    view.current = loop.status
    app = make_app(view, cmds, ApiSettings())

    async def main() -> list[float]:
        from aiohttp.test_utils import TestClient, TestServer
        async with TestClient(TestServer(app)) as client:
            restart = asyncio.create_task(client.post("/restart"))
            await asyncio.sleep(0.05)
            timings = []
            for _ in range(20):
                started = time.perf_counter()
                assert (await client.get("/primary")).status == 200
                timings.append(time.perf_counter() - started)
            assert (await restart).status == 503
            return timings

    timings = asyncio.run(main())
    assert max(timings) < 0.5  # never stuck behind the pending restart (which lasts 1 s)


def test_reload_and_reinitialize_are_queued_on_the_loop():
    reloaded = []
    loop = FakeLoop(REPLICA)
    cmds = commands(None, loop, reload_config=lambda: reloaded.append(True))
    assert asyncio.run(cmds.reload()).http_status == 202
    assert asyncio.run(cmds.reinitialize(False)).message == "reinitialize from n1 requested"
    assert loop.requests == ["reload", "reinitialize"] and reloaded == [True]
    assert refused(commands(None, FakeLoop(PRIMARY)).reinitialize(True))[0] == 412


def test_raft_membership_errors_map_to_http_statuses():
    raft = FakeRaft()
    cmds = commands(None, raft=raft)
    assert asyncio.run(cmds.add_raft_member("127.0.0.1:2230")).http_status == 200
    assert refused(cmds.add_raft_member("bad"))[0] == 400
    assert refused(cmds.remove_raft_member("127.0.0.1:2230"))[0] == 503
    assert asyncio.run(cmds.transfer_raft_leadership(None)).data == {"leader": "127.0.0.1:2224"}
    assert refused(commands(None).add_raft_member("127.0.0.1:2230"))[0] == 404


# ------------------------------------------------------------------------------ schemathesis, real commands

_schema = schemathesis.openapi.from_dict(__import__("raftpg.api.openapi", fromlist=["document"]).document("0.1.0"))


@pytest.fixture(scope="module")
def real_base_url():
    store = memory_dcs(FakeClock(), KeyLayout("/service/", "demo"))
    store.initialize(timeout_s=T)
    store.set_initialize("1", timeout_s=T)
    store.set_config({"ttl": 30}, None, timeout_s=T)
    store.acquire_leader("n1", 30, timeout_s=T)
    def restarted(loop: FakeLoop, what: str) -> None:
        # a restart completes at once: a generated {"timeout": 10} must not hold the request for 10 s, as
        # long as the client's own read timeout (that race made this test flaky)
        if what == "restart":
            pid = (loop.status.local.postmaster_pid if loop.status.local else None) or 4000
            loop.status = replace(loop.status, cycles=loop.status.cycles + 1,
                                  local=primary_local(postmaster_pid=pid + 1))

    cmds = NodeCommands(dcs=store, loop=FakeLoop(PRIMARY, restarted), clock=SystemClock(), raft=FakeRaft(),
                        timeout_s=1.0, switchover_wait_s=0.05, restart_wait_s=0.05)
    with serving(make_app(FakeView(PRIMARY), cmds, ApiSettings())) as url:
        yield url


@_schema.include(method=["POST", "PUT", "PATCH", "DELETE"]).parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_write_endpoints_with_real_operations_conform(case, real_base_url):
    from test_api_openapi import CHECKS
    case.call_and_validate(base_url=real_base_url, checks=CHECKS)


def test_remove_cluster_wipes_the_scope_only_for_the_leader_the_operator_confirmed(dcs):
    assert refused(commands(dcs).remove_cluster("n2")) == (409, "leader: the cluster's leader is n1, not n2")
    assert refused(commands(dcs).remove_cluster(None))[0] == 409
    assert dcs.load(timeout_s=T).leader.name == "n1", "a refused remove changes nothing"
    outcome = asyncio.run(commands(dcs).remove_cluster("n1"))
    assert outcome.http_status == 200
    view = dcs.load(timeout_s=T)
    assert (view.initialize, view.leader, view.members, view.config_revision) == (None, None, (), None)
