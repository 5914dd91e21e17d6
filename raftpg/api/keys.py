"""Typed application keys and the API's own settings (what ``make_app`` is configured with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from raftpg.api.ports import Commands, NodeView
from raftpg.api.restart import RestartScheduler
from raftpg.config import RestApiSettings, is_loopback, split_host_port

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class ApiSettings:
    """``username``/``password``: basic auth for unsafe methods (None: open, with a loud warning).

    ``client_certificates``: TLS requires a client certificate from ``restapi.cafile`` on every connection
    (``verify_client: required``), which authenticates every request, reads included.
    ``allow_unauthenticated``: the operator accepted an open API off loopback (the config refuses one
    otherwise); ``tls``: the API speaks HTTPS.
    """

    username: str | None = None
    password: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    listen: str = "127.0.0.1:8008"
    tls: bool = False
    client_certificates: bool = False
    allow_unauthenticated: bool = False

    @classmethod
    def from_restapi(cls, restapi: RestApiSettings) -> ApiSettings:
        auth = restapi.authentication
        return cls(username=auth.username if auth else None, password=auth.password if auth else None,
                   listen=restapi.listen, tls=restapi.tls, client_certificates=restapi.verify_client == "required",
                   allow_unauthenticated=restapi.allow_unauthenticated)

    @property
    def authentication(self) -> str:
        """What authenticates an unsafe request: ``none``, ``basic``, ``client-certificate`` or both
        joined by ``+`` (``GET /patroni`` reports it as ``api_authentication``)."""
        methods = [name for name, on in (("basic", self.username is not None),
                                         ("client-certificate", self.client_certificates)) if on]
        return "+".join(methods) or "none"

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can reach the API (any local user still can)."""
        return is_loopback(split_host_port(self.listen)[0])


class OwnMetrics:
    """raftpg's own metrics for ``GET /metrics``. The Prometheus registry is built at the first scrape, so
    a node nobody scrapes never imports prometheus_client (about 3 MB resident; issue 15)."""

    def __init__(self, view: NodeView) -> None:
        self._view = view
        self._registry: Any = None

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from raftpg.api.metrics import registry_for
        if self._registry is None:
            self._registry = registry_for(self._view)
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


VIEW = web.AppKey("view", NodeView)
COMMANDS = web.AppKey("commands", Commands)
SETTINGS = web.AppKey("settings", ApiSettings)
RESTARTS = web.AppKey("restarts", RestartScheduler)
METRICS = web.AppKey("metrics", OwnMetrics)
STARTED = web.AppKey("started_monotonic", float)
