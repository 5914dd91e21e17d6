"""The aiohttp application: ``make_app(view, commands, settings)`` and ``serve(...)`` to listen on it.

The app keeps no global state: its view, commands, settings, metrics registry and restart scheduler
live under typed ``web.AppKey``s, so several apps can run in one process (tests, ``raftpg demo``).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from raftpg.api import routes_read, routes_write
from raftpg.api.auth import FailedLogins, auth_middleware
from raftpg.api.conn_limits import (
    KEEPALIVE_TIMEOUT_S,
    LINGERING_S,
    LISTEN_BACKLOG,
    ConnectionLimiter,
    connections_max,
    quiet_accept_exhaustion,
)
from raftpg.api.http import errors_middleware, limits_middleware
from raftpg.api.keys import COMMANDS, METRICS, RESTARTS, SETTINGS, STARTED, VIEW, ApiSettings, OwnMetrics
from raftpg.api.ports import Commands, NodeView
from raftpg.api.restart import RestartScheduler
from raftpg.api.tls import ssl_context_for
from raftpg.config import RestApiSettings, is_wildcard, split_host_port
from raftpg.consensus.limits import raise_open_files_limit

log = logging.getLogger(__name__)


def make_app(view: NodeView, commands: Commands, settings: ApiSettings) -> web.Application:
    if settings.authentication == "none" and not settings.loopback_only and not settings.allow_unauthenticated:
        # the config refuses this too; settings built some other way must not open the port either
        raise ValueError(f"restapi.authentication: required when restapi.listen ({settings.listen}) is reachable "
                         "from other machines, unless restapi.allow_unauthenticated is true")
    warn_about_exposure(settings)
    failed_logins = FailedLogins(view.monotonic)
    app = web.Application(
        middlewares=[errors_middleware(), auth_middleware(settings.username, settings.password, failed_logins),
                     limits_middleware(settings.max_body_bytes)],
        client_max_size=settings.max_body_bytes,
    )
    app[VIEW] = view
    app[COMMANDS] = commands
    app[SETTINGS] = settings
    app[RESTARTS] = RestartScheduler(view.wall)
    app[METRICS] = OwnMetrics(view)
    app[STARTED] = view.monotonic()
    routes_read.add_routes(app)
    routes_write.add_routes(app)
    app.on_cleanup.append(_cleanup)
    return app


def warn_about_exposure(settings: ApiSettings) -> None:
    """One warning at start for an API that is open, or whose password crosses the network in clear text.
    (An open API off loopback never gets here without ``restapi.allow_unauthenticated``: the config refuses
    it.)"""
    if settings.authentication == "none":
        who = ("any local user of this machine" if settings.loopback_only else
               "anyone who can reach it (restapi.allow_unauthenticated is true)")
        log.warning(
            "REST API on %s has no authentication: %s can switch over, fail over, restart, reinitialize or "
            "reconfigure this cluster, and PATCH /config can set archive_command, which runs as the postgres "
            "user. Set restapi.authentication (username, password) to require credentials for those requests.",
            settings.listen, who)
    elif settings.username is not None and not settings.tls and not settings.loopback_only:
        log.warning(
            "REST API on %s takes basic auth over plain HTTP: the password crosses the network in clear "
            "text. Set restapi.certfile (and keyfile) to serve HTTPS.", settings.listen)


async def _cleanup(app: web.Application) -> None:
    await app[RESTARTS].close()


async def serve(app: web.Application, restapi: RestApiSettings) -> web.AppRunner:
    """Listen on ``restapi.listen`` (TLS per ``restapi``) and return the runner; ``await runner.cleanup()``
    stops it. A wildcard host listens on every interface (both IPv4 and IPv6 for ``*`` or ``::``).

    Idle and slow clients are bounded (conn_limits.py): keep-alive and header timeout, body timeout, and
    a cap on open connections that closes the oldest idle one. The open-files limit is raised first."""
    raise_open_files_limit()
    host, port = split_host_port(restapi.listen)
    bind: str | None = host
    if is_wildcard(host):
        bind = "0.0.0.0" if host == "0.0.0.0" else None
    limiter = ConnectionLimiter(connections_max(), app[SETTINGS].max_body_bytes)
    app.middlewares.insert(0, limiter.middleware)  # outermost: it counts a request from its start
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                           lingering_time=LINGERING_S)
    await runner.setup()
    assert runner.server is not None
    limiter.attach(runner.server)
    quiet_accept_exhaustion(asyncio.get_running_loop())
    site = web.TCPSite(runner, bind, port, ssl_context=ssl_context_for(restapi), reuse_address=True,
                       backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("REST API listening on %s (%s)", restapi.listen, "https" if restapi.tls else "http")
    return runner
