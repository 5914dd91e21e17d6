"""``POST /restart`` conditions and the one scheduled restart a node may have (Patroni's semantics).

Conditions (all optional): ``restart_pending`` (only if PostgreSQL reports a pending restart), ``role``
(``primary``/``replica``, Patroni's ``master`` too), ``postgres_version`` (only if the running server is
older, e.g. after a package upgrade). A scheduled restart is kept in memory on this node and runs on an
asyncio timer; the conditions are checked again when it fires. It does not survive an agent restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from raftpg.api.http import BadRequest, field
from raftpg.api.status import iso
from raftpg.model import NodeStatus

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_ROLES = {"primary": "primary", "master": "primary", "replica": "replica", "any": None}


@dataclass(frozen=True)
class RestartConditions:
    restart_pending: bool = False
    role: str | None = None              # primary | replica | None (any)
    postgres_version: int | None = None  # server_version_num form: 160002


def version_number(text: str) -> int:
    """'16.2' -> 160002, '9.6.3' -> 90603 (PostgreSQL's server_version_num)."""
    match = _VERSION.match(text.strip())
    if not match:
        raise BadRequest(f"postgres_version: not a PostgreSQL version: {text!r}")
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    if major >= 10:
        return major * 10000 + minor
    return major * 10000 + minor * 100 + patch


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")
_DURATION_S = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400, None: 1}


def parse_timeout_s(body: dict[str, Any]) -> float | None:
    """``timeout`` (Patroni's): how long the restart may take, seconds as a number or ``'30s'``/``'5min'``;
    a positive number or absent."""
    value = body.get("timeout")
    if value is None:
        return None
    match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    seconds = int(match.group(1)) * _DURATION_S[match.group(2)] if match else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    if seconds is None or seconds <= 0:
        raise BadRequest(f"timeout: must be a positive number of seconds, got {value!r}")
    return float(seconds)


def parse_conditions(body: dict[str, Any]) -> RestartConditions:
    pending = field(body, "restart_pending", bool) or False
    role_text = field(body, "role", str)
    if role_text is not None and role_text.strip().lower() not in _ROLES:
        raise BadRequest(f"role: must be primary, replica or any, got {role_text!r}")
    version = field(body, "postgres_version", str)
    return RestartConditions(
        restart_pending=pending,
        role=_ROLES[role_text.strip().lower()] if role_text else None,
        postgres_version=version_number(version) if version else None,
    )


def unmet(status: NodeStatus, conditions: RestartConditions, pending_now: bool = False) -> str | None:
    """Why the restart should not happen now, or None. ``pending_now``: PostgreSQL reported a pending
    restart at request time (the loop's status may not have seen it yet)."""
    local = status.local
    if status.witness or local is None:
        return "this node is a witness: it has no PostgreSQL"
    if conditions.restart_pending and not (local.pending_restart or pending_now):
        return "restart_pending: PostgreSQL has no pending restart"
    if conditions.role is not None and str(status.role) != conditions.role:
        return f"role: this node is {status.role}, not {conditions.role}"
    if conditions.postgres_version is not None:
        if local.server_version is None:
            return "postgres_version: the running server version is unknown"
        if local.server_version >= conditions.postgres_version:
            return f"postgres_version: the server ({local.server_version}) is not older"
    return None


class RestartScheduler:
    """At most one pending restart; ``fire`` is awaited at the time unless cancelled first."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._at: float | None = None
        self._conditions: RestartConditions | None = None

    def describe(self) -> dict[str, Any] | None:
        if self._at is None or self._conditions is None:
            return None
        c = self._conditions
        return {"schedule": iso(self._at), "restart_pending": c.restart_pending, "role": c.role,
                "postgres_version": c.postgres_version}

    def schedule(self, at: float, conditions: RestartConditions,
                 fire: Callable[[RestartConditions], Awaitable[None]]) -> dict[str, Any]:
        if self._at is not None:
            raise BadRequest(f"a restart is already scheduled at {iso(self._at)}: cancel it first", 409)
        delay = max(0.0, at - self._wall())
        self._at, self._conditions = at, conditions
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(delay, self._start, fire)
        described = self.describe()
        assert described is not None
        return described

    def _start(self, fire: Callable[[RestartConditions], Awaitable[None]]) -> None:
        conditions = self._conditions
        self._handle, self._at, self._conditions = None, None, None
        if conditions is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(fire, conditions))

    @staticmethod
    async def _run(fire: Callable[[RestartConditions], Awaitable[None]],
                   conditions: RestartConditions) -> None:
        try:
            await fire(conditions)
        except Exception as exc:  # noqa: BLE001 - a failed scheduled restart is logged, not raised
            log.error("scheduled restart failed: %s", exc)

    def cancel(self) -> dict[str, Any] | None:
        """Cancel the pending restart; return what was cancelled (None: nothing was scheduled)."""
        described = self.describe()
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at, self._conditions = None, None, None
        return described

    async def close(self) -> None:
        self.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
