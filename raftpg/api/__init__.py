"""The REST API (aiohttp): Patroni-compatible health checks, status, and cluster operations.

What lives here:
- ``ports.py``: what the API needs of the node (``NodeView``: cheap reads; ``Commands``: async operations).
- ``view.py``, ``commands.py``: those ports implemented over the HA loop and the DCS.
- ``app.py``: ``make_app(view, commands, settings)`` and ``serve(app, restapi)``; ``keys.py``: app keys
  and ``ApiSettings``; ``http.py``: JSON replies, body parsing, error/size middlewares; ``auth.py``: basic
  auth on the unsafe methods and the rate-limited log of failed logins.
- ``routes_read.py`` / ``routes_write.py``; ``health.py`` (the health predicates), ``status.py`` (the JSON
  documents), ``restart.py`` (restart conditions, scheduled restart), ``metrics.py`` (Prometheus),
  ``openapi.py`` (the served OpenAPI document), ``tls.py``; ``client.py``: the client raftpgctl uses.

May import: aiohttp, prometheus_client, and raftpg's model, config, dcs port, ha (status, operations).

Invariants: no handler blocks the event loop (DCS calls run in worker threads; health checks read only
the last published ``NodeStatus``); every unsafe method is authenticated when authentication is
configured; an API reachable off loopback is never open unless ``restapi.allow_unauthenticated`` says so
(the config and ``make_app`` both refuse it); every error is a JSON ``{"error": ...}`` naming the field at
fault.
"""

from raftpg.api.app import make_app, serve
from raftpg.api.commands import NodeCommands
from raftpg.api.keys import ApiSettings
from raftpg.api.ports import Commands, NodeView, Outcome
from raftpg.api.tls import ssl_context_for
from raftpg.api.view import LoopNodeView

__all__ = ["ApiSettings", "Commands", "LoopNodeView", "NodeCommands", "NodeView", "Outcome", "make_app",
           "serve", "ssl_context_for"]
