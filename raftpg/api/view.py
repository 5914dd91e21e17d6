"""``LoopNodeView``: the ``NodeView`` port over the HA loop's published status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from raftpg.api.fresh import FreshPostgres
from raftpg.clock import Clock
from raftpg.config import Config
from raftpg.model import LocalState, NodeStatus


class StatusSource(Protocol):
    """Anything with the last cycle's status (``HaLoop`` has it as an attribute, replaced atomically)."""

    @property
    def status(self) -> NodeStatus: ...


class LoopNodeView:
    """Reads only what the loop already published: every method is a few attribute loads.

    ``config``: the settings, or a callable returning the current ones (so a reload is seen at once).
    ``raft_status``: a callable answering the embedded store's status live (e.g. ``dcs.raft_status``);
    without it the status the loop recorded in its last cycle is used. ``probe``: a blocking callable
    observing PostgreSQL now (``Postgres.probe``), for health checks; None on a witness.
    """

    def __init__(self, *, loop: StatusSource, config: Config | Callable[[], Config], clock: Clock,
                 version: str, raft_status: Callable[[], dict[str, Any] | None] | None = None,
                 probe: Callable[[], LocalState] | None = None) -> None:
        self._loop = loop
        self._config = config
        self._clock = clock
        self._version = version
        self._raft_status = raft_status
        self._fresh = FreshPostgres(probe, clock) if probe is not None else None

    async def postgres_now(self) -> LocalState | None:
        if self._fresh is None:
            return None
        looked = self._loop.status.cycle_monotonic
        return await self._fresh.get(not_before=float("-inf") if looked is None else looked)

    def status(self) -> NodeStatus:
        return self._loop.status

    def config(self) -> Config:
        return self._config() if callable(self._config) else self._config

    def set_config(self, config: Config) -> None:
        """After a reload (SIGHUP): later requests see the new settings (tags, scope, ...)."""
        self._config = config

    def raft_status(self) -> dict[str, Any] | None:
        if self._raft_status is not None:
            try:
                return self._raft_status()
            except Exception:  # noqa: BLE001 - status is best effort, for humans
                return None
        raft = self._loop.status.extra.get("raft")
        return raft if isinstance(raft, dict) else None

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def wall(self) -> float:
        return self._clock.wall()

    @property
    def version(self) -> str:
        return self._version
