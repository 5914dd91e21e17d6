"""Typed application keys and the API's own settings (what ``make_app`` is configured with)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from raftpg.api.ports import Commands, NodeView
from raftpg.api.restart import RestartScheduler
from raftpg.config import RestApiSettings

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class ApiSettings:
    """``username``/``password``: basic auth for unsafe methods (None: open, with a loud warning)."""

    username: str | None = None
    password: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    listen: str = "127.0.0.1:8008"

    @classmethod
    def from_restapi(cls, restapi: RestApiSettings) -> ApiSettings:
        auth = restapi.authentication
        return cls(username=auth.username if auth else None, password=auth.password if auth else None,
                   listen=restapi.listen)


VIEW = web.AppKey("view", NodeView)
COMMANDS = web.AppKey("commands", Commands)
SETTINGS = web.AppKey("settings", ApiSettings)
RESTARTS = web.AppKey("restarts", RestartScheduler)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STARTED = web.AppKey("started_monotonic", float)
