"""Building the API for a running node: the one function ``raftpg.node`` calls.

Duck-typed on the node (``NodeLike``), since ``api`` may not import ``node`` (it is the outer layer).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from raftpg import __version__
from raftpg.api.app import make_app, serve
from raftpg.api.commands import NodeCommands, RaftMembership
from raftpg.api.details import DETAILS, DetailsSource
from raftpg.api.keys import ApiSettings
from raftpg.api.view import LoopNodeView
from raftpg.clock import Clock
from raftpg.config import Config
from raftpg.dcs.base import Dcs
from raftpg.ha.loop import HaLoop
from raftpg.model import NodeStatus


class NodeLike(Protocol):
    config: Config
    clock: Clock
    dcs: Dcs
    loop: HaLoop
    raft: Any  # the embedded Raft node (status, membership), None with etcd/Consul

    def status(self) -> NodeStatus: ...

    def raft_status(self) -> dict[str, Any] | None: ...

    def reload(self) -> None: ...


class _NodeStatus:
    """``NodeView``'s status source: the node's lock-guarded copy of the last cycle's status."""

    def __init__(self, node: NodeLike) -> None:
        self._node = node

    @property
    def status(self) -> NodeStatus:
        return self._node.status()


def raft_membership(raft: Any) -> RaftMembership | None:
    """The embedded Raft node as the API's membership handle (None for etcd/Consul, or a store that
    cannot change its membership)."""
    return raft if raft is not None and hasattr(raft, "add_member") and hasattr(raft, "remove_member") else None


def _query_of(pg: Any) -> Any:
    """``Postgres.query`` of the node's PostgreSQL: the node holds an adapter whose ``pg`` is the manager."""
    for candidate in (getattr(pg, "pg", None), pg):
        query = getattr(candidate, "query", None)
        if callable(query):
            return query
    return None


def build_api(node: NodeLike, *, version: str = __version__) -> web.Application:
    pg = getattr(node, "pg", None)
    view = LoopNodeView(loop=_NodeStatus(node), config=lambda: node.config, clock=node.clock, version=version,
                        raft_status=node.raft_status, probe=pg.probe if pg is not None else None,
                        load=lambda timeout_s: node.dcs.load(linearizable=False, timeout_s=timeout_s))
    commands = NodeCommands(dcs=node.dcs, loop=node.loop, clock=node.clock, raft=raft_membership(node.raft),
                            reload_config=node.reload)
    app = make_app(view, commands, ApiSettings.from_restapi(node.config.restapi))
    query = _query_of(pg)
    if query is not None:  # GET /patroni's start time and pending restart reasons, /metrics: one query
        app[DETAILS] = DetailsSource(lambda sql: query(sql, None, 1.0), node.clock)
    return app


async def start_api(node: NodeLike) -> web.AppRunner:
    """Listen on ``restapi.listen`` (TLS as configured); ``await runner.cleanup()`` stops it."""
    return await serve(build_api(node), node.config.restapi)
