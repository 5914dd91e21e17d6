"""A fake node for the API tests: NodeStatus values for each kind of node, a NodeView and a Commands
double, and a helper to run an aiohttp test client inside ``asyncio.run`` (no pytest-aiohttp)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftpg.api import ApiSettings, Outcome, make_app
from raftpg.config import Config, parse_config
from raftpg.ha.operations import OperationError
from raftpg.model import (
    ClusterView,
    DataDir,
    HistoryEntry,
    Leader,
    LocalState,
    Member,
    NodeStatus,
    ReplicationRow,
    SyncState,
    Tags,
)

SYSID = "7301234567890123456"
PRIMARY_LSN = 0x3000000
WALL = 1_700_000_000.0
MONO = 5000.0


def make_config(name: str = "n1", tags: dict[str, Any] | None = None, **restapi: Any) -> Config:
    return parse_config({
        "scope": "demo", "name": name,
        "restapi": {"listen": "127.0.0.1:8008", **restapi},
        "raft": {"data_dir": "/tmp/raftpg-test", "self_addr": "127.0.0.1:2222", "password": "raft-secret"},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/tmp/raftpg-test-pg",
                       "authentication": {"superuser": {"username": "postgres"},
                                          "replication": {"username": "replicator"}}},
        "tags": tags or {},
    })


def member(name: str, role: str = "replica", state: str = "streaming", lsn: int | None = PRIMARY_LSN,
           **kw: Any) -> Member:
    port = 5432 + int(name[-1])
    return Member(name=name, role=role, state=state, api_url=f"http://127.0.0.1:{8008 + int(name[-1])}/patroni",
                  conn_url=f"postgres://127.0.0.1:{port}/postgres", timeline=2, lsn=lsn, sysid=SYSID,
                  raft_addr=f"127.0.0.1:{2222 + int(name[-1])}", version="0.1.0", **kw)


def cluster_view(**over: Any) -> ClusterView:
    members = (
        member("n1", "primary", "running"),
        member("n2"),
        member("n3", lsn=PRIMARY_LSN - 100, tags=Tags(nofailover=True)),
        Member(name="w4", role="witness", state="running", witness=True, raft_addr="127.0.0.1:2226"),
    )
    base = ClusterView(initialize=SYSID, config_revision=3, leader=Leader("n1", 7), members=members,
                       sync=SyncState("n1", ("n2",), 9), last_lsn=PRIMARY_LSN, revision=12,
                       history=(HistoryEntry(1, 0x2000000, "no recovery target specified", WALL - 60, "n1"),))
    return replace(base, **over)


def primary_local(**over: Any) -> LocalState:
    rows = (ReplicationRow("n2", "127.0.0.1", "streaming", "sync", PRIMARY_LSN, PRIMARY_LSN, PRIMARY_LSN),)
    return replace(LocalState(data_dir=DataDir.INITIALIZED, sysid=SYSID, running=True, in_recovery=False,
                              timeline=2, lsn=PRIMARY_LSN, server_version=160002, replication=rows,
                              postmaster_pid=100), **over)


def replica_local(lsn: int = PRIMARY_LSN, **over: Any) -> LocalState:
    return replace(LocalState(data_dir=DataDir.INITIALIZED, sysid=SYSID, running=True, in_recovery=True,
                              timeline=2, lsn=lsn, receive_lsn=lsn, replay_lsn=lsn, streaming=True,
                              server_version=160002, postmaster_pid=200), **over)


def node_status(name: str = "n1", local: LocalState | None = None, view: ClusterView | None = None,
                **over: Any) -> NodeStatus:
    raft = {"self": "127.0.0.1:2223", "state": "leader", "term": 4, "leader": "127.0.0.1:2223",
            "commit_index": 41, "last_applied": 41, "has_quorum": True, "revision": 12, "ready": True,
            "members": [{"addr": "127.0.0.1:2223", "connected": True, "self": True},
                        {"addr": "127.0.0.1:2224", "connected": True, "match_index": 41}]}
    return NodeStatus(name=name, witness=over.pop("witness", False), view=view if view is not None else cluster_view(),
                      local=local, decision="no action", cycle_monotonic=MONO - 1, dcs_last_seen_wall=WALL - 1,
                      lease_valid_s=20.0, cycles=10, leader_changes=1, loop_duration_s=0.01,
                      extra={"raft": raft}, **over)


PRIMARY = node_status("n1", primary_local())
REPLICA = node_status("n2", replica_local())
STOPPED = node_status("n2", LocalState(data_dir=DataDir.INITIALIZED, sysid=SYSID))
WITNESS = node_status("w4", None, witness=True)


class FakeView:
    def __init__(self, status: NodeStatus = PRIMARY, config: Config | None = None,
                 raft: bool = True) -> None:
        self.current = status
        self.settings = config or make_config(status.name)
        self.raft = raft
        self.mono = MONO
        self.fresh: LocalState | None = None  # PostgreSQL now; None: the health checks use the status
        self.wall_s = WALL
        self.dcs_now: ClusterView | None = None  # GET /cluster's fresh read; None: the status's view

    def status(self) -> NodeStatus:
        return self.current

    def config(self) -> Config:
        return self.settings

    async def postgres_now(self) -> LocalState | None:
        return self.fresh

    async def cluster_now(self) -> ClusterView | None:
        return self.dcs_now

    def raft_status(self) -> dict[str, Any] | None:
        return self.current.extra.get("raft") if self.raft else None

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_s

    @property
    def version(self) -> str:
        return "0.1.0"


class FakeCommands:
    """Records every call; answers with ``outcome`` or raises ``fail`` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: OperationError | None = None
        self.config: dict[str, Any] = {"ttl": 30, "loop_wait": 10}

    async def _record(self, name: str, *args: Any, outcome: Outcome | None = None) -> Outcome:
        self.calls.append((name, args))
        if self.fail is not None:
            raise self.fail
        return outcome or Outcome(f"{name} done")

    async def switchover(self, leader: str | None, candidate: str | None, scheduled_at: str | None) -> Outcome:
        code = 202 if scheduled_at else 200
        return await self._record("switchover", leader, candidate, scheduled_at,
                                  outcome=Outcome("switchover accepted", code, {"leader": leader}))

    async def failover(self, candidate: str, force: bool) -> Outcome:
        return await self._record("failover", candidate, force)

    async def cancel_switchover(self) -> Outcome:
        return await self._record("cancel_switchover")

    async def remove_cluster(self, leader: str | None) -> Outcome:
        return await self._record("remove_cluster", leader)

    async def patch_config(self, patch: dict[str, Any]) -> Outcome:
        merged = {**self.config, **patch}
        return await self._record("patch_config", patch, outcome=Outcome("ok", 200, {"config": merged}))

    async def put_config(self, document: dict[str, Any]) -> Outcome:
        return await self._record("put_config", document, outcome=Outcome("ok", 200, {"config": document}))

    async def restart(self, timeout_s: float | None = None) -> Outcome:
        return await self._record("restart", *([timeout_s] if timeout_s is not None else []))

    async def reload(self) -> Outcome:
        return await self._record("reload", outcome=Outcome("reload requested", 202))

    async def failsafe(self, primary: str, primary_is_me: bool) -> str | None:
        self.calls.append(("failsafe", (primary, primary_is_me)))
        return self.failsafe_answer

    failsafe_answer: str | None = None  # None: accepted

    async def reinitialize(self, force: bool, from_leader: bool = False) -> Outcome:
        args = (force, True) if from_leader else (force,)
        return await self._record("reinitialize", *args, outcome=Outcome("reinitialize requested", 202))

    async def add_raft_member(self, addr: str) -> Outcome:
        return await self._record("add_raft_member", addr)

    async def remove_raft_member(self, addr: str) -> Outcome:
        return await self._record("remove_raft_member", addr)

    async def transfer_raft_leadership(self, addr: str | None) -> Outcome:
        return await self._record("transfer_raft_leadership", addr)


def build_app(view: FakeView | None = None, commands: FakeCommands | None = None,
              settings: ApiSettings | None = None) -> tuple[web.Application, FakeView, FakeCommands]:
    view = view or FakeView()
    commands = commands or FakeCommands()
    return make_app(view, commands, settings or ApiSettings()), view, commands


def with_client(app: web.Application, body: Callable[[TestClient], Awaitable[Any]]) -> Any:
    """Run ``body(client)`` against ``app`` on a loopback test server, inside a fresh event loop."""
    async def main() -> Any:
        async with TestClient(TestServer(app)) as client:
            return await body(client)

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: web.Application, port: int | None = None, host: str = "127.0.0.1",
            ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``app`` on ``host`` (a loopback address) from a background thread (for blocking clients);
    yield its base URL."""
    port = port or free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the test server did not start"
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
