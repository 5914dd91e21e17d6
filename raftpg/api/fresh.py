"""PostgreSQL as it is now, for health checks (DESIGN.md safety rule 10): at request time, or at most
``max_age_s`` (0.5 s) before.

One probe (``Observer.quick``: postmaster.pid and one short query on a connection kept open) runs in a
worker thread at a time; requests arriving meanwhile share it, and a result younger than ``max_age_s``
answers without a probe, so a burst of checks costs one query. The age is counted from when the probe
*started*. A probe that raises or outlasts ``timeout_s`` reads as "PostgreSQL does not answer" (running
False): a health check never reports a role it could not confirm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raftpg.clock import Clock
from raftpg.model import DataDir, LocalState

log = logging.getLogger(__name__)

NOT_ANSWERING = LocalState(data_dir=DataDir.INITIALIZED)


class FreshPostgres:
    def __init__(self, probe: Callable[[], LocalState], clock: Clock, *, max_age_s: float = 0.5,
                 timeout_s: float = 1.0) -> None:
        self._probe, self._clock = probe, clock
        self.max_age_s, self.timeout_s = max_age_s, timeout_s
        self._value: LocalState | None = None
        self._taken_at = float("-inf")
        self._inflight: asyncio.Future[LocalState] | None = None

    async def get(self) -> LocalState:
        if self._value is not None and self._clock.monotonic() - self._taken_at <= self.max_age_s:
            return self._value
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._inflight)

    async def _run(self) -> LocalState:
        started = self._clock.monotonic()
        try:
            value = await asyncio.wait_for(asyncio.to_thread(self._probe), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the answer is "not confirmed"
            log.debug("health probe of PostgreSQL failed: %s", exc)
            value = NOT_ANSWERING
        finally:
            self._inflight = None
        self._value, self._taken_at = value, started
        return value
