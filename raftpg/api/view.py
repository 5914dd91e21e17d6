"""``LoopNodeView``: the ``NodeView`` port over the HA loop's published status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from raftpg.api.fresh import FreshPostgres
from raftpg.clock import Clock
from raftpg.config import Config
from raftpg.model import ClusterView, LocalState, NodeStatus

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 1.0  # GET /cluster waits this long for the store, then answers from the last cycle's view


class StatusSource(Protocol):
    """Anything with the last cycle's status (``HaLoop`` has it as an attribute, replaced atomically)."""

    @property
    def status(self) -> NodeStatus: ...


class LoopNodeView:
    """Reads only what the loop already published: every method is a few attribute loads.

    ``config``: the settings, or a callable returning the current ones (so a reload is seen at once).
    ``raft_status``: a callable answering the embedded store's status live (e.g. ``dcs.raft_status``);
    without it the status the loop recorded in its last cycle is used. ``probe``: a blocking callable
    observing PostgreSQL now (``Postgres.probe``), for health checks; None on a witness. ``load``: a
    blocking read of the cluster from the DCS with a timeout (``Dcs.load(linearizable=False)``: local on
    the embedded Raft, one request on etcd or Consul), for ``GET /cluster``.
    """

    def __init__(self, *, loop: StatusSource, config: Config | Callable[[], Config], clock: Clock,
                 version: str, raft_status: Callable[[], dict[str, Any] | None] | None = None,
                 probe: Callable[[], LocalState] | None = None,
                 load: Callable[[float], ClusterView] | None = None) -> None:
        self._loop = loop
        self._load = load
        self._loading: asyncio.Future[ClusterView] | None = None
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

    async def cluster_now(self) -> ClusterView | None:
        if self._load is None:
            return None
        loading = self._loading
        if loading is None or loading.done():  # concurrent requests share one read: a burst costs one
            loading = self._loading = asyncio.ensure_future(asyncio.to_thread(self._load, LOAD_TIMEOUT_S))
            loading.add_done_callback(_retrieve)
        try:
            return await asyncio.wait_for(asyncio.shield(loading), LOAD_TIMEOUT_S + 0.5)
        except Exception as exc:  # noqa: BLE001 - DcsError, a timeout: the last cycle's view will do
            log.debug("GET /cluster: the DCS did not answer (%s); answering from the last cycle's view", exc)
            return None

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


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared read's failure as seen (a request that gave up on it no longer awaits it)."""
    if not future.cancelled():
        future.exception()
