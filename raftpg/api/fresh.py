"""PostgreSQL as it is now, for health checks (DESIGN.md safety rule 10): at request time, or at most
``max_age_s`` (0.5 s) before.

One probe (``Observer.quick``: postmaster.pid and one short query on a connection kept open) runs in a
worker thread at a time; requests arriving meanwhile share it, and a result younger than ``max_age_s``
answers without a probe, so a burst of checks costs one query. The age is counted from when the probe
*started*, and a probe older than the HA loop's last look is not reused: after a promotion the first
check answers from a new probe, not from one taken before it (a switchover's write gap lost up to 0.5 s
to that). A probe that raises or outlasts ``timeout_s`` reads as "PostgreSQL does not answer" (running
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

    async def get(self, not_before: float = float("-inf")) -> LocalState:
        """A probe that started at most ``max_age_s`` ago and not before ``not_before`` (the HA loop's last
        look: once the loop has acted, a promotion for one, an older probe is stale however young)."""
        now = self._clock.monotonic()
        if self._value is not None and now - self._taken_at <= self.max_age_s and self._taken_at >= not_before:
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
