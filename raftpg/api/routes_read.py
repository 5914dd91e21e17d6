"""Read endpoints: health checks, status, cluster, history, config, metrics, Raft members, OpenAPI.

They answer from the node's view (no DCS round trip), so they stay fast while the HA loop is busy,
except ``/cluster``, which reads the DCS (``NodeView.cluster_now``: local on the embedded Raft, at most
a second); health checks also look at PostgreSQL itself (``NodeView.postgres_now``: one short query at
most every half second). Health checks answer HEAD and OPTIONS with the same status and no body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from raftpg.api import health, patroni_metrics, status
from raftpg.api.details import NOTHING, PostgresDetails, source_of
from raftpg.api.http import BadRequest, error, reply
from raftpg.api.keys import METRICS, RESTARTS, SETTINGS, STARTED, VIEW
from raftpg.api.openapi import document as openapi_document
from raftpg.model import ClusterView, LocalState


async def _details(request: web.Request, wait: bool) -> PostgresDetails:
    """The start time, pending restart reasons, ...: ``wait`` for a fresh read (/patroni, /metrics), or take
    the last one at once (health checks: their latency is the probe's alone)."""
    source = source_of(request.app)
    if source is None:
        return NOTHING
    return await source.get() if wait else source.cached()


async def _status_body(request: web.Request, fresh: LocalState | None = None, *,
                       health_check: bool = False) -> dict[str, Any]:
    view = request.app[VIEW]
    wait = not health_check
    if not health_check:
        fresh = await view.postgres_now()
    return status.node_status(status.with_fresh(view.status(), fresh), view.config(), view.raft_status(),
                              view.version, request.app[RESTARTS].describe(), request.app[SETTINGS].authentication,
                              await _details(request, wait))


async def _probe(request: web.Request) -> health.Probe:
    view = request.app[VIEW]
    try:
        query = health.parse_query(request.query)
    except health.QueryError as exc:
        raise BadRequest(str(exc)) from None
    fresh = await view.postgres_now()  # PostgreSQL now; the loop's status for the key and the lease
    node, config = view.status(), view.config()
    timing = node.view.config if node.view is not None else config.bootstrap.dcs.to_model()
    return health.Probe(status=node, tags=config.tags.as_dict(), fresh=fresh, now=view.monotonic(),
                        started=request.app[STARTED], ttl_s=timing.ttl_s, loop_wait_s=timing.loop_wait_s,
                        failover_lag_max_bytes=timing.maximum_lag_on_failover_bytes, **query)


def health_handler(check: Callable[[health.Probe], bool]) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        probe = await _probe(request)
        code = 200 if check(probe) else 503
        if request.method in ("HEAD", "OPTIONS"):
            return web.Response(status=code)
        return reply(await _status_body(request, probe.fresh, health_check=True), code)

    return handle


async def patroni_status(request: web.Request) -> web.StreamResponse:
    if request.method in ("HEAD", "OPTIONS"):
        return web.Response(status=200)
    return reply(await _status_body(request))


def _cluster_view(request: web.Request) -> ClusterView:
    view = request.app[VIEW].status().view
    if view is None:
        raise BadRequest("this node has not read the cluster from the DCS yet", 503)
    return view


async def cluster(request: web.Request) -> web.StreamResponse:
    """Read afresh, as Patroni does (``raftpgctl list`` asks here): member keys do not wake the HA loop,
    so its view can lag a replica's start by loop_wait."""
    view = request.app[VIEW]
    now = await view.cluster_now()
    return reply(status.cluster(now or _cluster_view(request), view.config(), view.raft_status()))


async def history(request: web.Request) -> web.StreamResponse:
    return reply(status.history(_cluster_view(request)))


async def config(request: web.Request) -> web.StreamResponse:
    view = _cluster_view(request)
    if view.config_revision is None:
        return error("no dynamic config is stored in the DCS yet", 503)
    return reply(view.config.to_dict())


async def metrics(request: web.Request) -> web.StreamResponse:
    """Patroni's ``patroni_*`` metrics (PostgreSQL as it is now, as Patroni reads it at scrape time), then
    raftpg's own from the registry."""
    view = request.app[VIEW]
    node = status.with_fresh(view.status(), await view.postgres_now())
    patroni = patroni_metrics.render(node, view.config(), view.version, await _details(request, True))
    own, content_type = request.app[METRICS].render()
    return web.Response(body=patroni.encode() + own, headers={"Content-Type": content_type})


async def failsafe(request: web.Request) -> web.StreamResponse:
    """Patroni's ``GET /failsafe``: the failsafe topology (member -> REST API URL) the primary published;
    502 when failsafe_mode is off or no topology has been read."""
    view = request.app[VIEW].status().view
    if view is None or not view.config.failsafe_mode or view.failsafe is None:
        return error("failsafe_mode is not enabled", 502)
    return reply(dict(view.failsafe))


async def openapi(request: web.Request) -> web.StreamResponse:
    return reply(openapi_document(request.app[VIEW].version))


async def raft_members(request: web.Request) -> web.StreamResponse:
    raft = request.app[VIEW].raft_status()
    if raft is None:
        return error("this node does not use the embedded Raft store", 404)
    return reply({"leader": raft.get("leader"), "term": raft.get("term"),
                  "commit_index": raft.get("commit_index"), "members": raft.get("members") or []})


def add_routes(app: web.Application) -> None:
    for path, check in health.CHECKS.items():
        handler = health_handler(check)
        app.router.add_get(path, handler)  # GET and HEAD
        app.router.add_route("OPTIONS", path, handler)
    root = health_handler(health.primary)  # Patroni: GET / is the primary check, with the status body
    app.router.add_get("/", root)
    app.router.add_route("OPTIONS", "/", root)
    app.router.add_get("/patroni", patroni_status)
    app.router.add_route("OPTIONS", "/patroni", patroni_status)
    app.router.add_get("/cluster", cluster)
    app.router.add_get("/history", history)
    app.router.add_get("/config", config)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/failsafe", failsafe)
    app.router.add_get("/raft/members", raft_members)
