"""Bounds on the REST API's connections, so idle or slow clients cannot take every file descriptor.

aiohttp keeps an idle keep-alive connection for about an hour by default and accepts as many
connections as descriptors allow; a few thousand idle clients then make ``accept()`` fail with EMFILE
for everyone, health checks included. ``serve()`` (app.py) therefore sets

- ``KEEPALIVE_TIMEOUT_S``: an idle connection is closed after it, and a new connection must have sent
  its request headers by then (aiohttp arms the same timer at connect);
- ``BODY_TIMEOUT_S``: a request body must have arrived by then (:meth:`ConnectionLimiter.middleware`,
  the outermost middleware, reads it up front; the handlers then get it from aiohttp's cache), else
  408 and the connection is closed (after at most ``LINGERING_S`` reading what the client still sends);
- a cap on open connections, ``connections_max()``: a quarter of the open-files limit, at most
  ``CONNECTIONS_MAX``. A connection beyond it closes the *oldest idle* connection (one not inside a
  request), so a load balancer's health check gets in while idle clients hold the slots; if every
  connection is busy, the new one is closed instead.

Out of descriptors anyway (the cap acts after ``accept()``, and a closed connection releases its
descriptor an event-loop turn later), asyncio pauses accepting for a second by itself; serve() makes
its report one warning line instead of a traceback (:func:`quiet_accept_exhaustion`).

The cap hooks ``web.Server.connection_made`` on the one server instance (aiohttp calls it for every
new connection before the connection reads anything); tests/unit/api/test_api_conn_limits.py checks
the behaviour against the installed aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from raftpg.api.http import error
from raftpg.clock import SystemClock

log = logging.getLogger(__name__)
_REAL_TIME = SystemClock()  # waits on real threads and sockets: real time

LISTEN_BACKLOG = 64  # asyncio accepts up to this many per readiness event, before any is admitted
KEEPALIVE_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 10.0
LINGERING_S = 2.0  # after an early answer, unread body bytes are read and dropped this long (aiohttp: 10)
CONNECTIONS_MAX = 512
CONNECTIONS_MIN = 32
LOG_EVERY_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def connections_max() -> int:
    """A quarter of the soft open-files limit (the rest is for Raft, PostgreSQL, files), within bounds."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return CONNECTIONS_MAX
    return max(CONNECTIONS_MIN, min(CONNECTIONS_MAX, soft // 4))


class ConnectionLimiter:
    def __init__(self, limit: int, body_bytes_max: int) -> None:
        self.limit = limit
        self.body_bytes_max = body_bytes_max
        self._busy: dict[Any, int] = {}  # RequestHandler -> requests in progress on it
        self._last_log = float("-inf")
        self._closed_since_log = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            length = request.content_length
            if length and length <= self.body_bytes_max:  # others get 411/413 inside, unread
                try:
                    await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
                except TimeoutError:
                    response = error(f"body: did not arrive within {BODY_TIMEOUT_S:g}s", 408)
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            left = self._busy.pop(protocol, 1) - 1
            if left:
                self._busy[protocol] = left

    def attach(self, server: web.Server) -> None:
        """Enforce the cap on every connection ``server`` makes from now on."""
        made = server.connection_made

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            self._admit(server, handler)

        server.connection_made = connection_made  # type: ignore[method-assign]

    def _admit(self, server: web.Server, new: Any) -> None:
        live = [h for h in server.connections if h.transport is not None]
        excess = len(live) - self.limit
        if excess <= 0:
            return
        for old in live:  # oldest first
            if excess <= 0:
                break
            if old is not new and old not in self._busy:
                old.force_close()
                excess -= 1
        if excess > 0:  # every other connection is inside a request: refuse the newcomer
            new.force_close()
        self._closed_since_log += 1
        now = _REAL_TIME.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            log.warning("REST API: %d connections open, the cap: closed the oldest idle ones (%d times "
                        "since the last report)", len(live), self._closed_since_log)
            self._last_log, self._closed_since_log = now, 0


def quiet_accept_exhaustion(loop: asyncio.AbstractEventLoop) -> None:
    """Report asyncio's "socket.accept() out of system resource" (EMFILE: it pauses accepting for a
    second and retries by itself) as one rate-limited warning line; everything else as before."""
    previous = loop.get_exception_handler()
    last = [float("-inf")]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            now = _REAL_TIME.monotonic()
            if now - last[0] >= LOG_EVERY_S:
                last[0] = now
                log.warning("REST API: out of file descriptors accepting connections (%s); accepting "
                            "again in a second", context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
